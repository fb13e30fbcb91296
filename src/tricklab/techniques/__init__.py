"""Composable training techniques, one file each, registered by name for recipes.

Each has a functional core usable in any loop (e.g. ``ema_update_``, ``update_scale``) and a Technique shell
that declares its events and state slots (see ``tricklab.train.technique``). A technique registers itself with
``@register_technique`` in its own module; every module of this folder is imported here, and every registered
class is exported from this package under its class name (``from tricklab.techniques import EMA, GradClip``).
"""

from __future__ import annotations

import importlib
import pkgutil

from tricklab.techniques.registry import TECHNIQUES, register_technique

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

# functional cores re-exported for loops outside the trainer (also importable from their modules)
from tricklab.techniques.ema import ema_update_  # noqa: E402
from tricklab.techniques.swa import swa_update_  # noqa: E402

globals().update({cls.__name__: cls for _, cls in TECHNIQUES.items()})

__all__ = sorted({cls.__name__ for _, cls in TECHNIQUES.items()}) + [
    "TECHNIQUES", "ema_update_", "register_technique", "swa_update_"]
