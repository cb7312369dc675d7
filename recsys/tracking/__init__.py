"""MLflow tracking: the store (``store``), one run per job (``run.tracked_run``, ``tracker.Tracker``),
MLflow-safe names (``names``), the learning-curve figure (``curves``), the Lightning logger
(``run_logger``), the pyfunc model (``pyfunc``) and the model registry (``registry``).

Submodules are imported explicitly (``from recsys.tracking.run import tracked_run``): importing this
package imports nothing, so ``recsys.tracking.names`` stays free of MLflow's import time.
"""
