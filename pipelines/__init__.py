"""The jobs layer: typed pipeline functions (prepare, train, evaluate, recommend, tune) and the CLI."""
