"""The jobs: thin typed functions ``run(cfg, ...) -> Result`` over the library (prepare, train, evaluate,
recommend, similar_items, tune). The CLI (:mod:`recsys.cli`) and the pipelines under ``pipelines/`` call
them; each result has ``to_json()`` and ``summary()``.
"""
