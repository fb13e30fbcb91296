"""Shared bookkeeping of our optimizers: gather each group's parameters with their Adam moments and step
counts (LAMB, our RAdam), and give them scratch memory (LAMB, LARS, RAdam).

Scratch memory is working memory, not state (never saved; torch's pickling of an optimizer drops it). On the
CPU, ops that allocate their result are several times slower than in-place ones (page faults on fresh memory),
so the update directions go into buffers kept between steps:

* :func:`param_scratch`: one buffer of each parameter's shape (for a multi-tensor op over a whole group);
* :func:`scratch_runs`: the group cut into runs (of about ``chunk`` elements on the CPU for the multi-tensor
  path, one tensor each for the per-tensor path, the whole group elsewhere) and every run given views at the
  start of one flat buffer per device and dtype. Each op then runs over one run before the next run starts, so
  a run's tensors stay in the cache between the passes of an update (over the whole group each pass would
  stream them all from memory), and the scratch itself is the same hot memory for every run.
"""

from __future__ import annotations

from typing import Any

import torch


def gather_moments(opt: torch.optim.Optimizer, group: dict[str, Any], name: str) -> tuple[list[Any], ...] | None:
    """(params, grads, exp_avgs, exp_avg_sqs, steps) of ``group``'s parameters that have a gradient, with every
    step count advanced by one; None when none has a gradient."""
    params, grads, ms, vs, steps = [], [], [], [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        st = opt.state[p]
        if not st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif isinstance(st["step"], torch.Tensor):  # a state written by a torch.optim optimizer
            st["step"] = int(st["step"].item())
        st["step"] += 1
        params.append(p)
        grads.append(p.grad)
        ms.append(st["exp_avg"])
        vs.append(st["exp_avg_sq"])
        steps.append(st["step"])
    return (params, grads, ms, vs, steps) if params else None


def param_scratch(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """One persistent buffer of each parameter's shape, dtype and device."""
    scratch = opt.__dict__.setdefault("_scratch", {})
    out = []
    for p in params:
        buf = scratch.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = scratch[p] = torch.empty_like(p, memory_format=torch.preserve_format)
        out.append(buf)
    return out


def scratch_runs(opt: torch.optim.Optimizer, key: Any, params: list[torch.Tensor], foreach: bool,
                 chunk: int) -> list[tuple[int, int, list[torch.Tensor]]]:
    """``[(start, end, views)]``: runs of ``params`` and a scratch view of each one's shape (see the module
    docstring), cached while the group holds the same tensors. A run ends at ``chunk`` elements on the CPU in
    the multi-tensor path, after every tensor in the per-tensor path, and where the next tensor has another
    device or dtype."""
    cache = opt.__dict__.setdefault("_runs", {})
    hit = cache.get(key)
    # the cache holds the tensors themselves (not their ids, which a freed tensor's successor could reuse)
    if (hit is not None and hit[1] == (foreach, chunk) and len(hit[0]) == len(params)
            and all(a is b for a, b in zip(hit[0], params))):
        return hit[2]
    bounds: list[tuple[int, int]] = []
    start, n = 0, 0
    for i, p in enumerate(params):
        n += p.numel()
        if (i == len(params) - 1 or not foreach or (p.device.type == "cpu" and n >= chunk)
                or (params[i + 1].device, params[i + 1].dtype) != (p.device, p.dtype)):
            bounds.append((start, i + 1))
            start, n = i + 1, 0
    need: dict[tuple[torch.device, torch.dtype], int] = {}
    for a, b in bounds:
        kind = (params[a].device, params[a].dtype)
        need[kind] = max(need.get(kind, 0), sum(p.numel() for p in params[a:b]))
    flat = {kind: torch.empty(size, dtype=kind[1], device=kind[0]) for kind, size in need.items()}
    runs = []
    for a, b in bounds:
        views, off = [], 0
        buf = flat[(params[a].device, params[a].dtype)]
        for p in params[a:b]:
            views.append(buf[off:off + p.numel()].view(p.shape))
            off += p.numel()
        runs.append((a, b, views))
    cache[key] = (list(params), (foreach, chunk), runs)
    return runs
