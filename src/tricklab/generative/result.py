"""The result of one generative run, as the lab's task kinds expect it (see PARADIGMS.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tricklab.io import atomic_write_text

__all__ = ["ParadigmResult", "write_result"]


@dataclass
class ParadigmResult:
    """``metrics``: final numbers (keys as declared in :mod:`tricklab.generative.metrics`); ``history``: rows with
    ``step`` and ``seconds`` (and the training loss); ``extras``: JSON-able things a report may draw (sample
    grids as nested lists in [0, 1], coverage counts, the resolved config)."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


def write_result(result: ParadigmResult, run_dir: Path | None) -> ParadigmResult:
    """Write ``run_dir/result.json`` atomically (when a run folder is given) and return the result."""
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / "result.json", json.dumps(asdict(result), indent=1))
    return result
