"""Where a recsys command's output goes: the result on stdout, everything else on stderr, minus noise.

One place for the streams, logging and warnings of a recsys process:

- :func:`setup` (called once by the CLI) sends log lines to stderr, drops the third-party lines listed
  below, and turns MLflow's artifact download bars off;
- :func:`result_stdout` runs a job with stdout pointed at stderr (Python writes, C code and child
  processes alike), so that the result printed after it is the only thing on stdout: ``--json`` output
  is exactly one JSON object;
- :func:`quiet_third_party` drops the same lines for one block of library code (the batch job's predict
  loop), for callers that did not run :func:`setup`, such as a notebook;
- :func:`stream_overrides`: progress bars only when stderr is a terminal; elsewhere (a log file, a
  scheduler) they would be carriage-return frames, and the per-epoch / per-part log lines say the same.

The filters are targeted: each drops one known message, everything else still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

__all__ = [
    "DROPPED_LOG_LINES",
    "DROPPED_WARNINGS",
    "progress_bars_wanted",
    "quiet_third_party",
    "result_stdout",
    "setup",
    "stream_overrides",
]

_LIGHTNING_BANNER = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")

DROPPED_LOG_LINES: dict[str, tuple[str, ...]] = {
    # Lightning's banner on every Trainer: the accelerators it found, and tips for its cloud products.
    "pytorch_lightning.utilities.rank_zero": _LIGHTNING_BANNER,
    "lightning_fabric.utilities.rank_zero": _LIGHTNING_BANNER,
    # MLflow creating or migrating the tables of a new SQLite store.
    "mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables"),
    # MLflow loading the model just logged to check its input example (failures are still reported).
    "mlflow.pyfunc": ("Validating input example against model signature",),
}
"""Logger name -> the starts of the messages dropped from it."""

DROPPED_WARNINGS: tuple[str, ...] = (
    # torch 2.13 deprecates the LeafSpec class that Lightning 2.6 still checks for; nothing to act on.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # ModelCheckpoint on a rerun or --resume: recsys rewrites best.ckpt / last.ckpt there on purpose.
    r"Checkpoint directory .* exists and is not empty",
    # Lightning's num_workers advice: the batches come from arrays already in memory.
    r".*does not have many workers",
)
"""Regular expressions matched against the start of a warning's message."""

_LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
_LOG_DATE = "%Y-%m-%d %H:%M:%S"


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_FILTERS = {name: _DropMessages(prefixes) for name, prefixes in DROPPED_LOG_LINES.items()}


def _add_log_filters() -> None:
    # On the emitting loggers, not on a handler: MLflow's loggers have their own handler and do not
    # propagate. Adding the same filter object twice is a no-op.
    for name, drop in _FILTERS.items():
        logging.getLogger(name).addFilter(drop)


def _add_warning_filters() -> None:
    for pattern in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def setup(level: int = logging.INFO) -> None:
    """Log lines to stderr (``YYYY-MM-DD HH:MM:SS logger: message``), third-party noise dropped.

    MLflow's artifact download bars are turned off unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is
    set: logging a model downloads it again to check its input example, which on a local store draws
    bars for a copy that takes milliseconds.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, _LOG_DATE))
        root.addHandler(handler)
    logging.getLogger("recsys").setLevel(level)
    root.setLevel(level)
    # One line per HTTP request at INFO: far too chatty for a job's log.
    for chatty in ("urllib3", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    _add_log_filters()
    _add_warning_filters()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """The filters of :func:`setup` for one block only (warnings and log filters restored after it)."""
    with warnings.catch_warnings():
        _add_warning_filters()
        installed = [name for name, drop in _FILTERS.items() if drop not in logging.getLogger(name).filters]
        _add_log_filters()
        try:
            yield
        finally:
            for name in installed:
                logging.getLogger(name).removeFilter(_FILTERS[name])


def progress_bars_wanted() -> bool:
    """True when stderr is a terminal: only there does a redrawn bar read as one line."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def stream_overrides() -> list[str]:
    """Config overrides for where the output goes: ``runtime.progress_bar=false`` unless stderr is a
    terminal. Put them before the user's ``--set`` so that an explicit choice still wins."""
    return [] if progress_bars_wanted() else ["runtime.progress_bar=false"]


def _point_fd1_at_stderr() -> int | None:
    """Make file descriptor 1 a copy of 2 and return a duplicate of the old 1 (None when either is closed)."""
    try:
        os.fstat(1)
        os.fstat(2)
    except OSError:
        return None
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


@contextmanager
def result_stdout() -> Iterator[None]:
    """Everything written to stdout inside the block goes to stderr instead.

    Python-level writes (``print``, a progress bar built on ``sys.stdout``) are redirected, and so is
    file descriptor 1, which covers C extensions and child processes (DDP ranks) as well. Write the
    result after the block.
    """
    sys.stdout.flush()
    saved = _point_fd1_at_stderr()
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
