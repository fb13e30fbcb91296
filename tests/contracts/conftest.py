"""The contract sweeps share ``technique_audit.py`` (here) and the reference script of ``tests/reference``;
pytest runs with --import-mode=importlib, which does not put test folders on sys.path, so both folders are
added here (uniquely named modules, no clash with other folders' helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _folder in (_HERE, _HERE.parent / "reference"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
