"""NumPy reference helpers for the loss tests (float64 throughout)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def np_log_softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    zs = z - z.max(axis=axis, keepdims=True)
    return zs - np.log(np.exp(zs).sum(axis=axis, keepdims=True))


def np_softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    return np.exp(np_log_softmax(z, axis))


def np_reduce(loss: np.ndarray, reduction: str) -> np.ndarray | float:
    return {"mean": lambda a: float(a.mean()), "sum": lambda a: float(a.sum()), "none": lambda a: a}[reduction](loss)


def fd_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar NumPy function: the slow, simple reference for gradients
    (truncation error O(h^2) ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def autograd(fn: Callable[..., torch.Tensor], args: Sequence[torch.Tensor], wrt: Sequence[int]
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Value of ``fn(*args)`` and its gradients wrt ``args[i]`` for i in ``wrt`` (fresh leaves)."""
    args = [a.detach().clone().requires_grad_(i in wrt) if a.is_floating_point() else a for i, a in enumerate(args)]
    out = fn(*args)
    grads = torch.autograd.grad(out, [args[i] for i in wrt], materialize_grads=True)  # unused input -> zeros
    return out.detach(), list(grads)


def check_grads_fd(np_fn: Callable[..., float], torch_fn: Callable[..., torch.Tensor],
                   args: Sequence[torch.Tensor], wrt: Sequence[int], rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Autograd of ``torch_fn`` against NumPy finite differences of ``np_fn`` (same positional arguments)."""
    _, grads = autograd(torch_fn, args, wrt)
    np_args = [a.detach().numpy() for a in args]
    for i, g in zip(wrt, grads):
        def f(x: np.ndarray, i: int = i) -> float:
            a = list(np_args)
            a[i] = x
            return float(np_fn(*a))

        np.testing.assert_allclose(g.numpy(), fd_grad(f, np_args[i]), rtol=rtol, atol=atol)
