"""Model tests run on tiny tensors: one intra-op thread is faster for them, and immune to the
multi-millisecond waits that a parallel region pays on a busy shared CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
