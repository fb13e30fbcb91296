"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically, verified on load.

A checkpoint ``step-00000123`` is two files in one folder:

* ``step-00000123.safetensors``: every tensor of the nested state (model, optimizer moments, EMA weights,
  RNG states), flattened under generated keys;
* ``step-00000123.json``: the nested state with each tensor replaced by a reference, the SHA-256 of the
  safetensors file, and the SHA-256 of its own body. It is written last, so its presence marks a complete
  checkpoint.

Each file is written to a temporary name in the same folder, flushed, fsynced and renamed (rename is atomic on
POSIX), then the folder is fsynced: a SIGKILL at any moment leaves either the old set of checkpoints or the
new one, never a half-written file under a final name. Loading verifies both checksums; a corrupt checkpoint
is refused with :class:`CheckpointError`, and :func:`load_latest` falls back to the previous good one.
No pickle is involved anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tricklab.errors import CheckpointError
from tricklab.io import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported for techniques

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.json$")


# ----------------------------------------------------------------------------------------------- flatten
def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-able skeleton and a flat dict of tensors.

    Encodings: tensor -> {"__tensor__": key}; ndarray -> {"__ndarray__": key, "dtype": str};
    tuple -> {"__tuple__": [...]}; dict with any non-str key -> {"__items__": [[k, v], ...]};
    float nan/inf are kept by Python's json (allow_nan). Anything else raises TypeError.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            key = f"t{len(tensors)}"
            # clone: safetensors refuses tensors that share storage (tied weights, views)
            tensors[key] = o.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(o, np.ndarray):
            key = f"t{len(tensors)}"
            arr = o
            # uint32 (NumPy's MT19937 key) has no full torch support: widen losslessly to int64
            if arr.dtype in (np.uint32, np.uint16):
                arr = arr.astype(np.int64)
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
            return {"__ndarray__": key, "dtype": str(o.dtype)}
        if isinstance(o, np.generic):
            return enc(o.item())
        if isinstance(o, dict):
            if all(isinstance(k, str) for k in o) and not any(k.startswith("__") for k in o):
                return {k: enc(v) for k, v in o.items()}
            return {"__items__": [[enc(k), enc(v)] for k, v in o.items()]}
        if isinstance(o, tuple):
            return {"__tuple__": [enc(v) for v in o]}
        if isinstance(o, list):
            return [enc(v) for v in o]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if isinstance(o, torch.dtype):
            return {"__dtype__": str(o).removeprefix("torch.")}
        raise TypeError(f"cannot checkpoint a value of type {type(o).__name__}: {o!r:.80}")

    return enc(obj), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def dec(o: Any) -> Any:
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__ndarray__" in o:
                return tensors[o["__ndarray__"]].numpy().astype(np.dtype(o["dtype"]))
            if "__tuple__" in o:
                return tuple(dec(v) for v in o["__tuple__"])
            if "__items__" in o:
                return {_hashable(dec(k)): dec(v) for k, v in o["__items__"]}
            if "__dtype__" in o:
                return getattr(torch, o["__dtype__"])
            return {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o

    return dec(skeleton)


def _hashable(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.json"


def save_checkpoint(folder: str | os.PathLike[str], step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``state`` as checkpoint ``step`` in ``folder`` atomically; keep only the newest ``keep_last``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skeleton, tensors = flatten_state(state)
    blob = st_save(tensors) if tensors else st_save({"_empty": torch.zeros(0)})
    base = checkpoint_path(folder, step)
    tensor_file = base.with_suffix(".safetensors")
    atomic_write_bytes(tensor_file, blob)
    body = {"format": FORMAT_VERSION, "step": step, "tensors_file": tensor_file.name,
            "tensors_sha256": _sha256(blob), "state": skeleton}
    body_text = json.dumps(body, separators=(",", ":"))  # key order kept: metric rows read back unchanged
    envelope = json.dumps({"sha256": _sha256(body_text.encode()), "body": body_text})
    atomic_write_text(base, envelope)  # last: its presence marks the checkpoint complete
    if keep_last > 0:
        for old in list_checkpoints(folder)[:-keep_last]:
            _remove_checkpoint(old)
    return base


def _remove_checkpoint(json_path: Path) -> None:
    for p in (json_path, json_path.with_suffix(".safetensors")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint JSON files in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and verify one checkpoint (its .json path). Raises CheckpointError when anything is off."""
    path = Path(path)
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
        body_text = envelope["body"]
        if _sha256(body_text.encode()) != envelope["sha256"]:
            raise CheckpointError(f"checkpoint {path} fails its checksum (the JSON was modified or truncated)")
        body = json.loads(body_text)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from e
    if body.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {body.get('format')}, expected {FORMAT_VERSION}")
    tensor_file = path.parent / body["tensors_file"]
    try:
        blob = tensor_file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_file.name} is missing: {e}") from e
    if _sha256(blob) != body["tensors_sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: tensor file {tensor_file.name} fails its SHA-256 checksum (corrupt or truncated)"
        )
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error type
        raise CheckpointError(f"checkpoint {path}: tensor file cannot be parsed: {e}") from e
    return unflatten_state(body["state"], tensors)


def load_latest(
    folder: str | os.PathLike[str], warn: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that verifies; corrupt newer ones are reported and skipped."""
    report = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            report(f"{e}; falling back to the previous checkpoint")
    return None
