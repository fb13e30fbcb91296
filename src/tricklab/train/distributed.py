"""Multi-process training with DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc-per-node N -m tricklab run ...`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; the same
command without torchrun runs one process. Backend: NCCL on CUDA, gloo on the CPU. Each rank reads its shard
of every global batch (``InMemoryLoader(rank=, world_size=)``) and DDP averages the gradients, so N ranks
with per-rank batch B train like one process with batch N*B.

Only rank 0 writes (checkpoints, ``metrics.jsonl``, ``summary.json``, weights) and shows progress: the trainer
drops techniques with ``main_process_only`` on the other ranks. Every decision that ends a loop must be the
same on every rank, or one rank waits forever in an all-reduce the others never join: :func:`any_rank` makes a
rank-local flag (a wall-clock budget, a technique's stop request) global, and :func:`mean_over_ranks` averages
a rank-local value (the train loss of each shard) into the global-batch value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (one process when unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world_size=world,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> DistInfo:
    """Join the process group when launched under torchrun; a no-op for one process."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def device_for(device: str, info: DistInfo) -> torch.device:
    if device.startswith("cuda") and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (one 1-element all-reduce).

    Without an initialised multi-process group it returns ``flag`` unchanged. Every rank must call it the
    same number of times, in the same order, like any collective.
    """
    if not _active():
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (a new tensor; ``value`` itself when running one process).

    With equal per-rank batches (the sharding rule guarantees it) the mean of the ranks' mean losses is the
    mean loss of the global batch.
    """
    if not _active():
        return value
    t = value.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
