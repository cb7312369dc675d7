"""Subprocess entry for the crash/resume and DDP tests: trains a tiny config, optionally dies mid-epoch."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as L

from recsys.training.fit import MONITOR, fit
from tests.training.helpers import prepared, tiny_config


class _KillMidEpoch(L.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    tmp, source, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    cfg = tiny_config(tmp, source, **overrides)
    data = prepared(cfg)
    callbacks = [_KillMidEpoch(epoch=2, batch=1)] if mode == "kill" else []
    result = fit(cfg, data, resume=mode == "resume", callbacks=callbacks)
    print(
        "RESULT "
        + json.dumps(
            {
                "history": [r.get(MONITOR) for r in result.history],
                "best": result.best_val,
                "epochs": result.epochs,
                "bundle": str(result.bundle_path),
            }
        )
    )


if __name__ == "__main__":
    main()
