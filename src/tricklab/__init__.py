"""tricklab: advanced deep-learning techniques as plain PyTorch parts, composed and measured.

Importing ``tricklab`` loads torch and nothing optional: subpackages are imported on first use.
``tricklab.run(...)`` and ``tricklab.ablate(...)`` are the lab's Python API (:mod:`tricklab.lab.api`,
docs/python-api.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "layers", "models", "train", "techniques", "evaluate", "optim", "schedules", "lab", "registry", "errors",
}


_API = {"run", "ablate", "AblationResult"}


def __getattr__(name: str) -> Any:
    # Lazy subpackages keep `import tricklab` cheap and free of optional extras.
    if name in _SUBMODULES:
        return importlib.import_module(f"tricklab.{name}")
    if name in _API:  # the lab's Python API, loaded on first use like the subpackages
        return getattr(importlib.import_module("tricklab.lab.api"), name)
    raise AttributeError(f"module 'tricklab' has no attribute {name!r}")


__all__ = ["__version__", *sorted(_SUBMODULES), *sorted(_API)]
