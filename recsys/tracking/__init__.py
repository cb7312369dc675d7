"""MLflow tracking: the store (``store``), one run per job (``run.tracked_run``, ``tracker.Tracker``),
the names a person reads (``names``: metric sections, run and model names), run descriptions and summary
metrics (``summary``), the learning-curve figure (``curves``), the Lightning logger (``run_logger``) and
per-epoch extras (``epoch_metrics``), the pyfunc model (``pyfunc``), the model registry (``registry``), and
the link from an evaluation to its training run (``lineage``).

Submodules are imported explicitly (``from recsys.tracking.run import tracked_run``): importing this
package imports nothing, so ``recsys.tracking.names`` stays free of MLflow's import time.
"""
