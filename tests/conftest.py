"""Shared test set-up: a per-session data cache so tests never write to the user's cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tricklab_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one cache for the whole session: MNIST-1D is generated once (a few seconds), then read from .npz
    path = Path(os.environ.get("TRICKLAB_TEST_CACHE") or tmp_path_factory.mktemp("tricklab-cache"))
    os.environ["TRICKLAB_CACHE"] = str(path)
    return path
