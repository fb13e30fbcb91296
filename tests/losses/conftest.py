"""The loss tests share ``loss_helpers.py``; pytest runs with --import-mode=importlib, which does not put test
folders on sys.path, so this folder is added here (uniquely named module, no clash)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
