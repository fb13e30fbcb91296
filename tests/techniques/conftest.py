"""Shared helpers for the technique tests: ``augment_helpers.py`` and ``crash_helpers.py`` here, and the NumPy
references of ``tests/losses/loss_helpers.py`` (the focal-loss technique is checked against them).

pytest runs with --import-mode=importlib, which does not put test folders on sys.path, so both folders are added
here (the helper modules have unique names: no clash with other folders' helpers).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _folder in (_HERE, _HERE.parent / "losses"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
