"""recsys.console: targeted noise filters, stdout kept for the result, progress bars only on a terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest

from recsys import console


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def collected() -> Iterator[dict[str, _Collect]]:
    """A collecting handler on every logger the filters watch (MLflow's do not propagate to the root),
    with no filter on them yet (an earlier test may have run the CLI, whose setup() installs them)."""
    handlers = {name: _Collect() for name in console.DROPPED_LOG_LINES}
    saved = {name: logging.getLogger(name).filters[:] for name in handlers}
    for name, handler in handlers.items():
        logging.getLogger(name).filters.clear()
        logging.getLogger(name).addHandler(handler)
    yield handlers
    for name, handler in handlers.items():
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).filters[:] = saved[name]


def _emit_all() -> None:
    for name, prefixes in console.DROPPED_LOG_LINES.items():
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for prefix in prefixes:
            logger.info("%s and the rest of the line", prefix)
        logger.info("a line nobody filters")


def test_listed_log_lines_are_dropped_and_nothing_else(collected: dict[str, _Collect]) -> None:
    with console.quiet_third_party():
        _emit_all()
    for name, handler in collected.items():
        assert handler.messages == ["a line nobody filters"], name
    # Lightning's real banner lines, as its Trainer writes them.
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with console.quiet_third_party():
        lightning.info("GPU available: False, used: False")
        lightning.info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
        )
        lightning.info("`Trainer.fit` stopped: `max_epochs=2` reached.")
    assert collected[lightning.name].messages[-1] == "`Trainer.fit` stopped: `max_epochs=2` reached."
    assert len(collected[lightning.name].messages) == 2


def test_the_block_filters_are_removed_after_the_block(collected: dict[str, _Collect]) -> None:
    with console.quiet_third_party():
        pass
    _emit_all()
    for name, prefixes in console.DROPPED_LOG_LINES.items():
        assert len(collected[name].messages) == len(prefixes) + 1, name


def test_listed_warnings_are_dropped_and_others_shown() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with console.quiet_third_party():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", FutureWarning, 1)
            warnings.warn(
                "Checkpoint directory /tmp/run/checkpoints exists and is not empty.", UserWarning, 1
            )
            warnings.warn(
                "The `predict_dataloader` does not have many workers which may be a bottleneck",
                UserWarning,
                1,
            )
            warnings.warn("something else is deprecated", FutureWarning, 1)
    assert [str(w.message) for w in shown] == ["something else is deprecated"]


def test_everything_written_to_stdout_in_the_block_lands_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with console.result_stdout():
        print("from print")
        os.write(1, b"from fd 1\n")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    print('{"result": 1}')
    out, err = capfd.readouterr()
    assert out == '{"result": 1}\n'
    assert "from print" in err and "from fd 1" in err and "from a child" in err


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert not console.progress_bars_wanted()  # pytest captures stderr: not a terminal
    assert console.stream_overrides() == ["runtime.progress_bar=false"]
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert console.progress_bars_wanted() and console.stream_overrides() == []
