"""Resumable, seed-determined batch loaders.

Both loaders follow one rule, so a run can be stopped, resumed, sharded or switched between them without
changing which samples it sees:

* The order of epoch ``e`` is :func:`epoch_permutation` ``(n, seed, e)``: ``torch.randperm`` with a private
  generator seeded from ``(seed, e)`` alone. It never reads the global RNG and does not depend on what
  happened in earlier epochs, so the position ``(epoch, batch_index)`` is all a checkpoint needs.
* Sharding: ``batch_size`` is the per-rank batch ``B``; with ``W`` ranks the global batch ``b`` is
  ``perm[b*B*W : (b+1)*B*W]`` and rank ``r`` takes its slice ``[r*B : (r+1)*B]``. One process with batch
  ``B*W`` therefore sees exactly the union of the ``W`` ranks' batches, in the same order.

:class:`InMemoryLoader` indexes tensors directly (the fast path for every built-in data set);
:class:`StreamingLoader` drives a ``torch.utils.data.DataLoader`` with a batch sampler that follows the
same rule and starts at the resumed position, so skipped samples are never loaded.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["InMemoryLoader", "StreamingLoader", "epoch_permutation", "iterate_eval_batches"]

# Large odd multiplier: (seed, epoch) pairs map to distinct generator seeds for any realistic epoch count.
_EPOCH_STRIDE = 1_000_003
_U64 = (1 << 64) - 1


def epoch_permutation(num_samples: int, seed: int, epoch: int, *, shuffle: bool = True) -> Tensor:
    """The sample order of ``epoch``: a function of ``(num_samples, seed, epoch)`` only (int64, CPU).

    ``shuffle=False`` gives ``arange(num_samples)`` for every epoch.
    """
    if not shuffle:
        return torch.arange(num_samples, dtype=torch.int64)
    g = torch.Generator(device="cpu")
    # Masked to 64 bits because manual_seed rejects values outside the uint64 / int64 range.
    g.manual_seed((int(seed) * _EPOCH_STRIDE + int(epoch)) & _U64)
    return torch.randperm(num_samples, generator=g, dtype=torch.int64)


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass; batch_size=True is a bug, not a batch of one.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class _ShardedEpochOrder:
    """Position, permutation and sharding arithmetic shared by both loaders."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        batch_size = _check_int("batch_size", batch_size, 1)
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        if rank >= world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if num_samples < 1:
            raise ValueError("cannot build a loader over an empty data set (0 samples)")
        if world_size > 1 and not drop_last:
            raise ValueError(
                "drop_last=False is not supported with world_size > 1: every rank must take the same number of "
                "equally sized batches; use drop_last=True (the incomplete last global batch is dropped)"
            )
        global_batch = batch_size * world_size
        if global_batch > num_samples:
            what = f"batch_size {batch_size}" if world_size == 1 else (
                f"global batch batch_size*world_size = {batch_size}*{world_size} = {global_batch}"
            )
            raise ValueError(f"{what} is larger than the data set ({num_samples} samples)")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        self._batch_index = 0
        self._perm: Tensor | None = None  # permutation of self._epoch, computed on first use

    # -- position -------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        return self._epoch

    @property
    def batch_index(self) -> int:
        """Index of the next batch :meth:`next_batch` returns within the current epoch."""
        return self._batch_index

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.global_batch_size
        return math.ceil(self.num_samples / self.batch_size)  # world_size == 1 here

    @property
    def remaining(self) -> int:
        """Batches left in the current epoch."""
        return len(self) - self._batch_index

    def permutation(self) -> Tensor:
        """The sample order of the current epoch (shared by all ranks)."""
        if self._perm is None:
            self._perm = epoch_permutation(self.num_samples, self.seed, self._epoch, shuffle=self.shuffle)
        return self._perm

    def _span(self, b: int) -> tuple[int, int]:
        """Positions in the permutation that this rank's batch ``b`` covers."""
        start = b * self.global_batch_size + self.rank * self.batch_size
        return start, min(start + self.batch_size, self.num_samples)

    def batch_indices(self, b: int | None = None) -> Tensor:
        """Sample indices of this rank's batch ``b`` (default: the next one) of the current epoch."""
        b = self._batch_index if b is None else b
        if not 0 <= b < len(self):
            raise IndexError(f"batch {b} out of range: the epoch has {len(self)} batches")
        start, end = self._span(b)
        return self.permutation()[start:end]

    def _check_not_exhausted(self) -> None:
        if self._batch_index >= len(self):
            raise RuntimeError(
                f"epoch {self._epoch} is exhausted (all {len(self)} batches were returned); "
                "call start_next_epoch() before next_batch()"
            )

    def _position_changed(self) -> None:
        """Hook: the position moved other than by one batch (new epoch, restored state)."""

    def start_next_epoch(self) -> None:
        """Move to batch 0 of the next epoch, with that epoch's permutation."""
        self._epoch += 1
        self._batch_index = 0
        self._perm = None
        self._position_changed()

    # -- checkpointing --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Position plus what is needed to check, on restore, that the order is still the same."""
        return {
            "epoch": self._epoch,
            "batch_index": self._batch_index,
            "seed": self.seed,
            "permutation": self.permutation().clone(),
            "num_samples": self.num_samples,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position exactly; raise ``ValueError`` if the data, seed or batch size changed.

        The stored permutation is compared with the one recomputed from the stored seed and epoch, so a
        resumed run cannot silently draw a different order. ``world_size`` may differ from the saving run
        as long as the global batch size is the same (batch indices count global batches).
        """
        missing = [k for k in ("epoch", "batch_index", "seed", "permutation") if k not in state]
        if missing:
            raise ValueError(f"loader state is missing {missing}")
        epoch, batch_index, seed = int(state["epoch"]), int(state["batch_index"]), int(state["seed"])
        if epoch < 0:
            raise ValueError(f"loader state has a negative epoch {epoch}")
        gb = state.get("global_batch_size")
        if gb is not None and int(gb) != self.global_batch_size:
            raise ValueError(
                f"loader state was saved with global batch size {int(gb)} but this loader has "
                f"{self.global_batch_size} (batch_size {self.batch_size} x world_size {self.world_size}); "
                "its batch_index would point at different samples"
            )
        stored = torch.as_tensor(state["permutation"]).detach().to("cpu", torch.int64).reshape(-1)
        if stored.numel() != self.num_samples:
            raise ValueError(
                f"loader state has a permutation of {stored.numel()} samples but the data has "
                f"{self.num_samples}: the data changed since the checkpoint"
            )
        expected = epoch_permutation(self.num_samples, seed, epoch, shuffle=self.shuffle)
        if not torch.equal(stored, expected):
            raise ValueError(
                f"loader state's permutation for epoch {epoch} differs from the one seed {seed} gives now: "
                "the data, the seed, the shuffle setting or the torch RNG changed since the checkpoint"
            )
        if not 0 <= batch_index <= len(self):
            raise ValueError(f"loader state batch_index {batch_index} is outside [0, {len(self)}]")
        self.seed = seed
        self._epoch = epoch
        self._batch_index = batch_index
        self._perm = expected
        self._position_changed()


class InMemoryLoader(_ShardedEpochOrder):
    """Batches of in-memory tensors in a seed-determined, resumable, shardable order.

    Batches are ``index_select`` gathers, so tensors on a GPU stay there and no worker processes are
    involved. Use :meth:`next_batch` / :meth:`start_next_epoch` for step-driven training, or iterate:
    ``for x, y in loader`` yields the rest of the current epoch and then moves to the next epoch (only
    if the loop ran to the end; a ``break`` keeps the position where it stopped).
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError(
                f"inputs and targets must be tensors, got {type(inputs).__name__} and {type(targets).__name__}"
            )
        if inputs.dim() == 0 or targets.dim() == 0:
            raise ValueError("inputs and targets need a leading sample dimension (got a 0-d tensor)")
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"inputs and targets differ in length: {inputs.shape[0]} inputs vs {targets.shape[0]} targets"
            )
        super().__init__(
            int(inputs.shape[0]),
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.inputs = inputs
        self.targets = targets
        self._device_perm: dict[torch.device, Tensor] = {}

    def _position_changed(self) -> None:
        self._device_perm.clear()

    def _indices_on(self, device: torch.device, start: int, end: int) -> Tensor:
        # One host-to-device copy of the permutation per epoch instead of one per batch.
        perm = self._device_perm.get(device)
        if perm is None:
            perm = self._device_perm[device] = self.permutation().to(device)
        return perm[start:end]

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """Return this rank's batch at ``batch_index`` and advance by one."""
        self._check_not_exhausted()
        start, end = self._span(self._batch_index)
        x = self.inputs.index_select(0, self._indices_on(self.inputs.device, start, end))
        y = self.targets.index_select(0, self._indices_on(self.targets.device, start, end))
        self._batch_index += 1
        return x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while self._batch_index < len(self):
            yield self.next_batch()
        self.start_next_epoch()


def iterate_eval_batches(inputs: Tensor, targets: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Sequential batches for evaluation: no shuffling, the last partial batch kept, slices not copies."""
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets differ in length: {inputs.shape[0]} inputs vs {targets.shape[0]} targets"
        )
    batch_size = _check_int("batch_size", batch_size, 1)
    # Validation above runs at call time; only the slicing below is lazy.
    return (
        (inputs[start : start + batch_size], targets[start : start + batch_size])
        for start in range(0, int(inputs.shape[0]), batch_size)
    )


class _ResumableBatchSampler(Sampler[list[int]]):
    """Yields the loader's batches of the current epoch from its position at the time ``iter`` is called.

    Reading the position at ``iter`` time (not construction time) is what lets one DataLoader serve
    every epoch and every resume: the loader creates a fresh DataLoader iterator after each position jump.
    The loader is held by weak reference: a strong one would close the cycle loader -> DataLoader
    iterator -> sampler -> loader, and a multi-worker iterator freed by the cycle collector (instead of
    by reference counting) finds its queues already torn down and waits 5 s per worker to shut down.
    """

    def __init__(self, order: _ShardedEpochOrder) -> None:
        self._order_ref = weakref.ref(order)
        self._remaining = len(order)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order_ref()
        if order is None:
            raise RuntimeError("the StreamingLoader that owned this DataLoader no longer exists")
        perm = order.permutation()
        spans = [order._span(b) for b in range(order.batch_index, len(order))]
        self._remaining = len(spans)
        # The returned generator must not keep `order` alive (see the class docstring), so everything it
        # needs is computed here and only `perm` and `spans` are captured.
        return (perm[start:end].tolist() for start, end in spans)

    def __len__(self) -> int:
        return self._remaining


class StreamingLoader(_ShardedEpochOrder):
    """The :class:`InMemoryLoader` order and position API over a ``torch.utils.data.Dataset``.

    For data that does not fit in memory: samples are fetched (optionally by worker processes) through a
    ``DataLoader`` whose batch sampler follows :func:`epoch_permutation` and the sharding rule and starts
    at the resumed ``batch_index``, so resuming mid-epoch never loads the skipped samples. For a
    ``TensorDataset`` it returns exactly the batches :class:`InMemoryLoader` returns. The DataLoader
    iterator is created lazily on the first :meth:`next_batch` after a position jump; worker seeds come
    from a private generator seeded by ``(seed, epoch, batch_index)``, never from the global RNG.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"StreamingLoader needs a map-style dataset with __len__ and __getitem__, got {type(dataset).__name__}"
            ) from None
        num_workers = _check_int("num_workers", num_workers, 0)
        if num_workers == 0 and (prefetch_factor is not None or persistent_workers):
            raise ValueError("prefetch_factor and persistent_workers need num_workers > 0")
        super().__init__(
            n,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.dataset = dataset
        self._worker_seed_gen = torch.Generator(device="cpu")
        self._dataloader = DataLoader(
            dataset,
            batch_sampler=_ResumableBatchSampler(self),
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            generator=self._worker_seed_gen,
        )
        self._iterator: Iterator[Any] | None = None

    @property
    def dataloader(self) -> DataLoader:
        """The underlying DataLoader (its batch sampler follows this loader's position)."""
        return self._dataloader

    def _position_changed(self) -> None:
        # Dropping the iterator shuts down non-persistent workers and discards prefetched batches of the
        # old position; the next next_batch() starts a fresh one at the new position.
        self._iterator = None

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """Return this rank's batch at ``batch_index`` and advance by one."""
        self._check_not_exhausted()
        if self._iterator is None:
            seed = (self.seed * _EPOCH_STRIDE + self._epoch) * 65_537 + self._batch_index
            self._worker_seed_gen.manual_seed(seed & _U64)
            self._iterator = iter(self._dataloader)
        try:
            batch = next(self._iterator)
        except StopIteration:  # cannot happen unless the dataset shrank under us
            self._iterator = None
            raise RuntimeError(
                f"the DataLoader ended before batch {self._batch_index} of epoch {self._epoch}; "
                "did the dataset's length change?"
            ) from None
        self._batch_index += 1
        if self._batch_index >= len(self):
            # Free non-persistent workers as soon as the epoch is done rather than at the next epoch
            # (a persistent iterator is kept by the DataLoader itself and reused).
            self._iterator = None
        if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) == 2:
            return batch[0], batch[1]
        return batch  # a custom collate_fn may return another structure; pass it through unchanged

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while self._batch_index < len(self):
            yield self.next_batch()
        self.start_next_epoch()
