"""Importing tricklab loads no optional extra and starts no work (reference: a clean interpreter's sys.modules)."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ["sklearn", "scipy", "matplotlib", "mnist1d", "optuna", "networkx", "rich", "pandas", "pyarrow", "h5py",
            "PIL", "datasets"]


def test_import_loads_no_optional_extra() -> None:
    code = (
        "import sys, threading; before = threading.active_count(); import tricklab; "
        "import tricklab.train, tricklab.techniques, tricklab.data, tricklab.models, tricklab.evaluate, "
        "tricklab.optim, tricklab.schedules, tricklab.lab.recipe; "
        f"print([m for m in {OPTIONAL!r} if m in sys.modules]); print(threading.active_count() - before)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded, threads = r.stdout.strip().splitlines()
    assert loaded == "[]", f"optional modules imported at import time: {loaded}"
    assert threads == "0", "importing tricklab started a thread"


def test_lazy_subpackages() -> None:
    import tricklab

    assert tricklab.__version__
    assert tricklab.train.Trainer is not None
