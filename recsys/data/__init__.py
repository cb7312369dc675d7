"""Interaction data: raw log -> cleaned, encoded, split, prepared dataset directory (polars/numpy only).

Entry points (import them from their modules; this package imports nothing so that it stays cheap):

- :func:`recsys.data.pipeline.prepare` / :func:`recsys.data.pipeline.build`: the whole pipeline.
- :class:`recsys.data.prepared.PreparedDataset`: a prepared directory, loaded (histories, targets,
  vocabularies, item counts).
- :class:`recsys.data.vocab.Vocabulary`, :class:`recsys.data.sequences.Sequences`: id maps and CSR sequences.
- :func:`recsys.data.readers.scan_interactions` / :func:`recsys.data.readers.read_interactions`: readers
  (text formats in :mod:`recsys.data.text_reader`, shared pieces in :mod:`recsys.data.scan`).
- :mod:`recsys.data.errors`: :class:`~recsys.data.errors.DataError` and its subclasses.
- :mod:`recsys.data.synthetic`: seeded synthetic logs of any size.
"""
