"""The technique registry and its decorator: a new technique is one file.

Put ``@register_technique`` on the class in its own module ``tricklab/techniques/<name>.py``; the package
imports every module of the folder (``tricklab.techniques.__init__``), so nothing else needs editing. The
decorator checks what can be checked on the class (a Technique subclass, a lowercase name, known slots,
handlers that are real events) so a mistake fails at import, not in the middle of a run.
"""

from __future__ import annotations

import re
from typing import TypeVar

from tricklab.errors import ConfigError
from tricklab.registry import Registry
from tricklab.train.events import EVENTS, SLOTS
from tricklab.train.technique import Technique

__all__ = ["TECHNIQUES", "register_technique"]

TECHNIQUES: Registry[type[Technique]] = Registry("technique")

T = TypeVar("T", bound=type[Technique])

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_technique(cls: T) -> T:
    """Class decorator: register ``cls`` in :data:`TECHNIQUES` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Technique)):
        raise TypeError(f"register_technique expects a Technique subclass, got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not _NAME.match(name) or name == Technique.name:
        raise ConfigError(f"technique class {cls.__name__} needs a name: a lowercase identifier such as "
                          f"'grad_clip' (its registry and recipe name), got {name!r}")
    for kind in ("reads", "writes"):
        bad = sorted(set(getattr(cls, kind)) - SLOTS)
        if bad:
            raise ConfigError(f"technique {name!r} declares unknown {kind} slot(s) {bad}; valid: {sorted(SLOTS)}")
    handlers = {m[3:] for m in dir(cls) if m.startswith("on_") and callable(getattr(cls, m))}
    if handlers - set(EVENTS):
        raise ConfigError(f"technique {name!r} defines handler(s) for unknown event(s) "
                          f"{sorted(handlers - set(EVENTS))}; events: {list(EVENTS)}")
    TECHNIQUES.register(name, cls)
    return cls
