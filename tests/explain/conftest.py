"""Shared set-up for the explanation tests: ``explain_helpers.py`` (small models) is put on sys.path, since
pytest's --import-mode=importlib does not add test folders; every test runs with one torch thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test (the machine is shared; small models are slower with more), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
