"""tricklab: advanced deep-learning techniques as plain PyTorch parts, composed and measured.

Importing ``tricklab`` loads torch and nothing optional: subpackages are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "layers", "models", "train", "techniques", "evaluate", "optim", "schedules", "lab", "registry", "errors",
}


def __getattr__(name: str) -> Any:
    # Lazy subpackages keep `import tricklab` cheap and free of optional extras.
    if name in _SUBMODULES:
        return importlib.import_module(f"tricklab.{name}")
    raise AttributeError(f"module 'tricklab' has no attribute {name!r}")


__all__ = ["__version__", *sorted(_SUBMODULES)]
