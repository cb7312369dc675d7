"""ONNX export of the scoring path: left-padded histories -> next-item scores, for serving without torch.

The exported graph is :meth:`BERT4Rec.predict_next` (embeddings, the encoder, the output head and the dot
product with every item), traced by ``torch.onnx.export`` (the ``torch.export`` based exporter) for a
fixed history width of ``max_len - 1`` and a dynamic batch:

- input ``history``: ``int64[batch, max_len - 1]``, item indices, LEFT-padded with 0 (PAD); the most
  recent item in the last column. Longer histories are cut to their most recent ``max_len - 1`` items,
  shorter ones padded on the left (:func:`pad_left`).
- output ``scores``: ``float32[batch, n_items + 2]``; column ``j`` is item index ``j`` (1..n_items are
  the bundle's ``items.parquet`` indices), and columns 0 (PAD) and ``n_items + 1`` (MASK) are ``-inf``.

Excluding seen items and taking the top k stay with the caller (a ``-inf`` scatter and an arg-partition),
as they do in :mod:`recsys.inference.recommend`. The file is self-contained (weights inside, no external
data file) and carries ``recsys.*`` metadata entries (version, max_len, n_items, the bundle's data
fingerprint). Needs the ``onnx`` extra (``pip install 'recsys[onnx]'``: onnx and onnxscript for the
exporter, onnxruntime for :func:`check_onnx`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recsys import __version__
from recsys.model.bert4rec import BERT4Rec

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportError",
    "OnnxCheck",
    "ScoringGraph",
    "check_onnx",
    "export_onnx",
    "pad_left",
]

INPUT_NAME = "history"
OUTPUT_NAME = "scores"
_CHECK_ROWS = 16


class ExportError(ValueError):
    """The export cannot run here (a missing optional dependency) or its output would be unusable."""


class ScoringGraph(nn.Module):
    """What the ONNX file computes: ``Long[B, max_len - 1]`` histories -> ``Float[B, V]`` scores."""

    def __init__(self, model: BERT4Rec) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: Tensor) -> Tensor:
        return self.model.predict_next(history)


def pad_left(histories: list[np.ndarray], width: int) -> np.ndarray:
    """``int64[len(histories), width]``: each history's most recent ``width`` items, left-padded with 0."""
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, items in enumerate(histories):
        recent = np.asarray(items, dtype=np.int64)[-width:] if width else np.zeros(0, np.int64)
        out[row, width - len(recent) :] = recent
    return out


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ExportError(
            f"ONNX export needs the {module!r} package: install the onnx extra (pip install 'recsys[onnx]')"
        ) from None


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _example(model: BERT4Rec, rows: int, seed: int = 0) -> np.ndarray:
    """Seeded histories of every length 0..max_len-1 (so padding, full rows and the all-PAD row occur)."""
    rng = np.random.default_rng(seed)
    width = model.max_len - 1
    lengths = np.arange(rows) % (width + 1)
    return pad_left([rng.integers(1, model.n_items + 1, size=n) for n in lengths], width)


def export_onnx(model: BERT4Rec, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write the scoring graph of ``model`` to ``path`` (replaced atomically: written beside it, renamed).

    Args:
        model: the trained model (exported in eval mode, on the CPU, in float32).
        path: the ``.onnx`` file to write.
        metadata: extra ``metadata_props`` entries (``recsys.version``, ``recsys.max_len`` and
            ``recsys.n_items`` are always written).
    """
    _require("onnx")
    _require("onnxscript")
    import onnx

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    graph = ScoringGraph(model.float().cpu().eval()).eval()
    example = torch.from_numpy(_example(model, rows=4))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # The exporter prints its progress on stdout; a job's stdout is its result (--json): stderr. Its
        # libraries log every graph rewrite at INFO, and that torchvision (unused here) is absent.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), _quiet_loggers():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch deprecates what it calls
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"history": {0: torch.export.Dim("batch")}},
                dynamo=True,
                verbose=False,
                external_data=False,  # one file; the 2 GiB protobuf limit is ~8M items at d = 64
            )
        proto = onnx.load(str(tmp))
        entries = {
            "recsys.version": __version__,
            "recsys.max_len": str(model.max_len),
            "recsys.n_items": str(model.n_items),
            "recsys.input": f"{INPUT_NAME}: int64[batch, {model.max_len - 1}] item indices, left-padded",
            "recsys.output": f"{OUTPUT_NAME}: float32[batch, {model.vocab_size}], column j = item index j",
            **(metadata or {}),
        }
        for key, value in entries.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save(proto, str(tmp))
        tmp.chmod(0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX Runtime's scores against torch's on the same seeded histories."""

    rows: int
    max_abs_diff: float
    same_top10: bool  # the same ten best items, in the same order, for every row


def check_onnx(model: BERT4Rec, path: str | Path, rows: int = _CHECK_ROWS) -> OnnxCheck:
    """Score ``rows`` seeded histories with ONNX Runtime and with torch; compare (finite scores only: the
    PAD and MASK columns are ``-inf`` in both)."""
    _require("onnxruntime")
    import onnxruntime as ort

    histories = _example(model, rows=rows, seed=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: histories})[0]
    with torch.inference_mode():
        want = model.float().cpu().eval().predict_next(torch.from_numpy(histories)).numpy()
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)):
        raise ExportError(f"{path}: ONNX Runtime's -inf columns differ from torch's")
    k = min(10, model.n_items)
    same = bool(
        np.array_equal(
            np.argsort(-got, axis=1, kind="stable")[:, :k], np.argsort(-want, axis=1, kind="stable")[:, :k]
        )
    )
    diff = float(np.abs(got[finite] - want[finite]).max(initial=0.0))
    return OnnxCheck(rows=rows, max_abs_diff=diff, same_top10=same)
