"""The result of one generative run, as the lab's task kinds expect it (see PARADIGMS.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tricklab.evaluate.declared import ParadigmResult
from tricklab.io import atomic_write_text

__all__ = ["ParadigmResult", "write_result"]




def write_result(result: ParadigmResult, run_dir: Path | None) -> ParadigmResult:
    """Write ``run_dir/result.json`` atomically (when a run folder is given) and return the result."""
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / "result.json", json.dumps(asdict(result), indent=1))
    return result
