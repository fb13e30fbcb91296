"""In-memory data sets, their registry and the user cache folder.

Every data set tricklab ships is small enough to live in memory as a handful of tensors, so the common
currency is :class:`ArrayDataset`: train/test (and optionally validation) tensors plus the facts a model
builder needs (number of classes, per-sample input shape). Data sets register a loader function in
:data:`DATASETS`; :func:`tricklab.data.datasets.load_dataset` (also ``tricklab.data.load_dataset``) is the one
entry point recipes and the CLI use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tricklab.registry import Registry

__all__ = ["ArrayDataset", "DATASETS", "FLOAT_TARGET_KINDS", "TARGET_KINDS", "cache_dir"]

DATASETS: Registry[Callable[..., "ArrayDataset"]] = Registry("dataset")
"""Name -> loader function ``f(data_dir: str | None = None, **kwargs) -> ArrayDataset``."""

# What ``meta["target_kind"]`` may say (absent means "multiclass"). Class ids are int64; regression targets and
# multi-label indicator rows (N, C) of 0/1 are float32, the dtype MSE and BCE-with-logits losses take.
TARGET_KINDS = ("multiclass", "binary", "multilabel", "regression")
FLOAT_TARGET_KINDS = frozenset({"multilabel", "regression"})

# Order matters for the fingerprint, so it is fixed here rather than derived from dataclass fields.
_ARRAY_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass
class ArrayDataset:
    """A data set held as tensors: features float32 (or int64 token ids), labels int64.

    ``input_shape`` is the shape of one sample (``(40,)`` for MNIST-1D, ``(1, 28, 28)`` for Fashion-MNIST),
    so a model can be built without looking at the tensors. ``x_val``/``y_val`` are ``None`` until
    :meth:`with_validation` carves a split out of the training set.

    ``meta["target_kind"]`` (one of :data:`TARGET_KINDS`; absent means ``"multiclass"``) says what the targets
    are: int64 class ids for ``multiclass``/``binary``, float32 for ``regression`` (``num_classes`` is then the
    number of outputs) and ``multilabel`` ((N, C) 0/1 indicators). ``source_digest`` is a hash of the files the
    arrays were read from (see :mod:`tricklab.data.files`); when set, it is part of :meth:`fingerprint`.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    # Free-form facts (source, split seed...) that are shown to the user but are not part of the data.
    meta: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the source files' bytes and of the options that read them; None for data made by code.
    source_digest: str | None = None

    def __post_init__(self) -> None:
        # Checked once here so every consumer can rely on the shapes instead of re-validating them.
        self.input_shape = tuple(int(s) for s in self.input_shape)
        kind = self.meta.get("target_kind", "multiclass")
        if kind not in TARGET_KINDS:
            raise ValueError(f"{self.name}: meta['target_kind'] must be one of {TARGET_KINDS}, got {kind!r}")
        y_dtype = torch.float32 if kind in FLOAT_TARGET_KINDS else torch.int64
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if (x is None) != (y is None):
                raise ValueError(f"{self.name}: x_{split} and y_{split} must both be set or both be None")
            if x is None:
                continue
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}"
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{self.name}: x_{split} samples have shape {tuple(x.shape[1:])}, "
                    f"expected input_shape {self.input_shape}"
                )
            if y.dtype != y_dtype:
                want = str(y_dtype).removeprefix("torch.")
                raise ValueError(f"{self.name}: y_{split} must be {want} for {kind} targets, got {y.dtype}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    def fingerprint(self) -> str:
        """SHA-256 hex digest of every array's bytes, shape and dtype (and of ``source_digest`` when set).

        Two data sets with equal fingerprints hold bit-identical tensors; a run records it so a resumed or
        compared run can tell that its data changed. The name and metadata are left out on purpose: the
        same arrays under another name are the same data. Data read from files also mixes in the digest of
        those files, so a changed byte changes the fingerprint even where it does not change an array (a
        column that is dropped, a category that maps to the same code).
        """
        h = hashlib.sha256()
        for key in _ARRAY_FIELDS:
            t = getattr(self, key)
            h.update(key.encode())
            if t is None:
                h.update(b"<none>")
                continue
            t = t.detach().to("cpu").contiguous()
            h.update(repr((tuple(t.shape), str(t.dtype))).encode())
            # view(uint8) reads the raw bytes of any dtype (bfloat16 included) without a numpy round trip.
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        if self.source_digest is not None:  # left out when None so fingerprints of built-in sets do not move
            h.update(b"source_digest")
            h.update(self.source_digest.encode())
        return h.hexdigest()

    def with_validation(self, fraction: float, seed: int) -> ArrayDataset:
        """Return a copy whose validation split is a random ``fraction`` of the training set.

        The split is not stratified. It is drawn with a private ``torch.Generator`` seeded by ``seed`` so it
        is reproducible and leaves the global RNG alone; both parts keep the original sample order.
        ``fraction == 0`` returns a copy without validation data.
        """
        fraction = float(fraction)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
        if self.x_val is not None:
            raise ValueError(f"{self.name} already has a validation split ({self.num_val} samples)")
        n = self.num_train
        n_val = int(round(fraction * n))
        if fraction > 0.0:
            n_val = max(n_val, 1)  # a non-zero request should never silently give an empty split
        if n_val == 0:
            return dataclasses.replace(self, meta=dict(self.meta))
        if n_val >= n:
            raise ValueError(f"validation fraction {fraction} leaves no training samples out of {n}")
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(n, generator=g)
        val_idx = perm[:n_val].sort().values
        train_idx = perm[n_val:].sort().values
        meta = dict(self.meta, validation_fraction=fraction, validation_seed=int(seed))
        return dataclasses.replace(
            self,
            x_train=self.x_train.index_select(0, train_idx.to(self.x_train.device)),
            y_train=self.y_train.index_select(0, train_idx.to(self.y_train.device)),
            x_val=self.x_train.index_select(0, val_idx.to(self.x_train.device)),
            y_val=self.y_train.index_select(0, val_idx.to(self.y_train.device)),
            meta=meta,
        )

    def summary(self) -> str:
        """One line for logs: name, split sizes, shape, classes."""
        val = f", val {self.num_val}" if self.x_val is not None else ""
        kind = self.meta.get("target_kind", "multiclass")
        what = {"regression": "regression outputs", "multilabel": "labels"}.get(kind, "classes")
        return (
            f"{self.name}: train {self.num_train}{val}, test {self.num_test}, "
            f"input {self.input_shape}, {self.num_classes} {what}"
        )


def cache_dir() -> Path:
    """The user cache folder: ``$TRICKLAB_CACHE``, else ``$XDG_CACHE_HOME/tricklab``, else ``~/.cache/tricklab``.

    The folder is not created here; writers create it when they first need it.
    """
    env = os.environ.get("TRICKLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "tricklab"
    return Path.home() / ".cache" / "tricklab"
