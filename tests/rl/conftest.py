"""RL tests run their small networks on one thread: with tiny matmuls, more threads only add synchronization (and
on a shared machine they oversubscribe the cores). The previous thread count is restored after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
