"""TopK blocks -> parquet parts with the original ids, published atomically: what every top-k writer shares.

:class:`PartBuffer` collects :class:`~recsys.inference.topk.TopK` blocks and writes a part every
``per_part`` rows of users (a user is never split across parts) through
:class:`~recsys.inference.writer.PartWriter`; :func:`write_parts` is the single-process output of
``recsys recommend`` and ``recsys similar-items`` (the distributed one:
:mod:`recsys.inference.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import polars as pl

from recsys.inference.topk import TopK, plan_batches
from recsys.inference.writer import (
    OutputManifest,
    PartWriter,
    create_staging,
    discard,
    publish,
    write_manifest,
)
from recsys.io import writing

__all__ = ["ELSEWHERE", "PartBuffer", "plan_parts", "write_parts"]

ToTable = Callable[[TopK], pl.DataFrame]
ELSEWHERE = "another --out"
"""What moves an output to another file system (named in a full-disk error)."""


class PartBuffer:
    """Collects TopK batches and writes a part every ``per_part`` users (a user is never split).

    Within a part, rows are sorted by history row, so a single process writes users in input order.
    """

    def __init__(self, writer: PartWriter, per_part: int, to_table: ToTable) -> None:
        self.writer = writer
        self.per_part = per_part
        self.to_table = to_table
        self._tops: list[TopK] = []
        self._count = 0
        self.users = 0

    def add(self, top: TopK) -> None:
        start = 0
        while start < len(top):
            take = min(len(top) - start, self.per_part - self._count)
            self._tops.append(top if take == len(top) else top.slice(start, start + take))
            self._count += take
            start += take
            if self._count >= self.per_part:
                self.flush()

    def flush(self) -> None:
        if not self._tops:
            return
        merged = TopK.concat(self._tops).sorted_by_user()
        self.writer.write(self.to_table(merged).to_arrow())
        self.users += len(merged)
        self._tops, self._count = [], 0


def plan_parts(lengths: np.ndarray, per_part: int, batch_size: int, max_width: int) -> list[np.ndarray]:
    """Batches, length-sorted within each part-sized chunk of rows, so that a single process writes each
    part from one contiguous range of rows (users come out in input order)."""
    plan: list[np.ndarray] = []
    for lo in range(0, len(lengths), per_part):
        chunk = plan_batches(lengths[lo : lo + per_part], batch_size, max_width=max_width)
        plan.extend(rows + lo for rows in chunk)
    return plan


def write_parts(
    blocks: Iterable[TopK], out: Path, *, per_part: int, to_table: ToTable, manifest: OutputManifest
) -> OutputManifest:
    """Write every block into parts in a staging directory, then the manifest, then publish at ``out``.

    OS errors while writing (a full disk) become one :class:`~recsys.data.errors.OutputWriteError` naming
    ``out``; the staging directory is discarded and a previous output at ``out`` stays as it was.
    """
    with writing(out, elsewhere=ELSEWHERE):
        staging = create_staging(out)
    try:
        with writing(out, elsewhere=ELSEWHERE):
            buffer = PartBuffer(PartWriter(staging), per_part, to_table)
            for top in blocks:
                buffer.add(top)
            buffer.flush()
            written = write_manifest(staging, {**manifest, "world_size": 1})
            publish(staging, out)
    except BaseException:
        discard(staging)
        raise
    return written
