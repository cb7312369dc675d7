"""Optuna tuning: the search space (``space``), the tune file (``tune_file``), one trial (``objective``),
the study and its storage (``study``), the MLflow parent run (``parent``) and the results (``report``).

``recsys.jobs.tune.run`` is the job that ties them together.
"""
