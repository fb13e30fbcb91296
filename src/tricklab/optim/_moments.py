"""Shared bookkeeping of the Adam-family optimizers (LAMB, our RAdam): gather each group's parameters with
their first and second moments, step counts and a persistent scratch buffer.

The scratch buffer is working memory, not state (never saved): on the CPU, multi-tensor ops that allocate
their result are several times slower than in-place ones (page faults on fresh memory), so each parameter
keeps one buffer of its shape for the update direction.
"""

from __future__ import annotations

from typing import Any

import torch


def gather_moments(opt: torch.optim.Optimizer, group: dict[str, Any], name: str) -> tuple[list[Any], ...] | None:
    """(params, grads, exp_avgs, exp_avg_sqs, scratch buffers, steps) of ``group``'s parameters that have a
    gradient, with every step count advanced by one; None when none has a gradient."""
    params, grads, ms, vs, bufs, steps = [], [], [], [], [], []
    scratch = opt.__dict__.setdefault("_scratch", {})  # (torch's pickling of an optimizer drops it)
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
        buf = scratch.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = scratch[p] = torch.empty_like(p, memory_format=torch.preserve_format)
        params.append(p)
        grads.append(p.grad)
        ms.append(st["exp_avg"])
        vs.append(st["exp_avg_sq"])
        bufs.append(buf)
        steps.append(st["step"])
    return (params, grads, ms, vs, bufs, steps) if params else None
