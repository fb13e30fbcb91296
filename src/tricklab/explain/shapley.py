"""Shapley values of features (or groups of features) by exact enumeration and by Kernel SHAP.

The game: players are the ``M`` features (each a group of input elements given by ``feature_mask``); the value
of a coalition ``S`` is the expected explained logit when the features in ``S`` take the example's values and the
others come from a reference ``r`` of the background set (interventional SHAP, Janzing et al. 2020):

    v(S) = 1/N sum_j S_c(x_S, r_j,notS)

* :func:`exact_shapley` evaluates all ``2^M`` coalitions and applies Shapley's formula (Shapley 1953)
  ``phi_i = sum_{S not containing i} |S|! (M - |S| - 1)! / M! * (v(S + i) - v(S))``.
* :func:`kernel_shap` (Lundberg & Lee 2017, Theorem 2) fits the additive model ``v(S) ~ phi_0 + sum_{i in S}
  phi_i`` by weighted least squares with the Shapley kernel ``pi(S) = (M - 1) / (C(M, |S|) |S| (M - |S|))``,
  with ``phi_0 = v({})`` and the efficiency constraint ``sum_i phi_i = v(all) - v({})`` imposed exactly (the
  last coefficient is eliminated). When ``2^M - 2 <= samples`` every coalition is enumerated with its kernel
  weight and the solution equals the exact Shapley values; otherwise ``samples`` coalitions are drawn from the
  kernel (size ``s`` with probability proportional to ``(M - 1) / (s (M - s))``, then a uniform subset of that
  size) in complementary pairs, each with weight 1.

Both return a tensor shaped like ``inputs`` in which every element carries its group's value divided by the
group's size, so that the map sums to ``v(all) - v({})`` like the other attributions (captum instead puts the
whole value on every element of the group), or the values themselves, ``(B, M)``, with ``per_feature=True``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    baseline_distribution,
    check_batch_size,
    check_inputs,
    check_model,
    check_positive_int,
    eval_mode,
    forward_scores,
    resolve_target,
)

__all__ = ["exact_shapley", "kernel_shap", "coalition_values", "feature_groups", "shapley_kernel_weight"]

#: enumeration of 2^M coalitions gets expensive fast; above this exact_shapley refuses
MAX_EXACT_FEATURES = 16


def feature_groups(inputs: Tensor, feature_mask: Tensor | None, method: str) -> tuple[Tensor, int]:
    """``feature_mask`` as an int64 tensor shaped like one example, ids ``0..M-1``, and ``M``.

    None gives every element its own feature. A mask may be given for one example or broadcast to it (e.g.
    ``(1, 28, 28)`` for a ``(1, 28, 28)`` image, ``(40,)`` for ``(1, 40)`` signals).
    """
    shape = inputs.shape[1:]
    if feature_mask is None:
        return torch.arange(math.prod(shape), device=inputs.device).reshape(shape), math.prod(shape)
    if not isinstance(feature_mask, Tensor) or feature_mask.dtype.is_floating_point:
        raise UserError(f"{method}: feature_mask must be an integer tensor shaped like one example {tuple(shape)}")
    try:
        mask = feature_mask.to(inputs.device).long().expand(shape)
    except RuntimeError:
        raise UserError(f"{method}: feature_mask of shape {tuple(feature_mask.shape)} does not broadcast to one "
                        f"example's shape {tuple(shape)}") from None
    ids = torch.unique(mask)
    m = int(ids.numel())
    if int(ids.min()) != 0 or int(ids.max()) != m - 1:
        raise UserError(f"{method}: feature_mask ids must be 0..M-1 with none missing, got ids {ids.tolist()[:20]}")
    return mask, m


def coalition_values(model: nn.Module, x: Tensor, refs: Tensor, target: Tensor, coalitions: Tensor, mask: Tensor,
                     method: str, batch_size: int) -> Tensor:
    """``v(S)`` (float64, ``(B, K)``) for ``coalitions`` ``(K, M)`` bool: features in S from the example, the
    rest from each reference, the explained logit averaged over the references."""
    b, k, nr, shape = x.shape[0], coalitions.shape[0], refs.shape[0], x.shape[1:]
    keep = coalitions[:, mask]  # (K, *shape): True where the element comes from the example
    out = torch.empty(b, k, dtype=torch.float64)
    rows_per_coalition = nr
    per_chunk = max(1, batch_size // rows_per_coalition)
    for i in range(b):
        for k0 in range(0, k, per_chunk):
            kk = keep[k0:k0 + per_chunk]  # (k', *shape)
            z = torch.where(kk.unsqueeze(1), x[i], refs.unsqueeze(0))  # (k', N, *shape)
            s = forward_scores(model, z.reshape(-1, *shape), target[i].expand(z.shape[0] * nr), method,
                               batch_size)
            out[i, k0:k0 + kk.shape[0]] = s.reshape(-1, nr).double().mean(1).cpu()
    return out


def _spread(phi: Tensor, mask: Tensor, like: Tensor) -> Tensor:
    """``(B, M)`` values -> a tensor shaped like the inputs, each element holding its group's value / its size."""
    size = torch.bincount(mask.reshape(-1), minlength=phi.shape[1]).to(phi)
    return (phi / size).to(like)[:, mask]


def _prepare(model: nn.Module, inputs: Tensor, target: TargetLike, baselines: Tensor | float | None,
             feature_mask: Tensor | None, batch_size: int | None, method: str
             ) -> tuple[nn.Module, Tensor, Tensor, Tensor, int, int]:
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    refs = baseline_distribution(baselines, x, method)
    mask, m = feature_groups(x, feature_mask, method)
    return model, x, refs, mask, m, bs


def exact_shapley(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                  baselines: Tensor | float | None = None, feature_mask: Tensor | None = None,
                  per_feature: bool = False, max_features: int = MAX_EXACT_FEATURES,
                  batch_size: int | None = None) -> Tensor:
    """Exact Shapley values by enumerating all ``2^M`` coalitions (``M <= max_features``)."""
    method = "exact_shapley"
    model, x, refs, mask, m, bs = _prepare(model, inputs, target, baselines, feature_mask, batch_size, method)
    if m > max_features:
        raise UserError(f"{method}: {m} features means 2^{m} coalitions; group them with feature_mask to at most "
                        f"{max_features} features, raise max_features, or use kernel_shap")
    codes = torch.arange(2 ** m)
    bits = ((codes.unsqueeze(1) >> torch.arange(m)) & 1).bool()  # (2^M, M): coalition k holds feature i if bit i
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        v = coalition_values(model, x, refs, t, bits.to(x.device), mask, method, bs)  # (B, 2^M) float64
    size = bits.sum(1)
    # w(s) = s! (M - s - 1)! / M!, for the coalitions S that do not hold i (|S| = s <= M - 1)
    w = torch.tensor([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) if s < m else 0.0
                      for s in range(m + 1)], dtype=torch.float64)
    phi = torch.empty(x.shape[0], m, dtype=torch.float64)
    for i in range(m):
        without = codes[~bits[:, i]]
        phi[:, i] = ((v[:, without | (1 << i)] - v[:, without]) * w[size[without]]).sum(1)
    return phi.to(x.dtype) if per_feature else _spread(phi, mask, x)


def shapley_kernel_weight(m: int, s: int) -> float:
    """``pi(S) = (M - 1) / (C(M, s) s (M - s))`` for ``0 < s < M`` (Lundberg & Lee 2017, Theorem 2)."""
    return (m - 1) / (math.comb(m, s) * s * (m - s))


def _sample_coalitions(m: int, samples: int, generator: torch.Generator | None) -> Tensor:
    """``samples`` coalitions (rounded up to pairs) drawn from the Shapley kernel, each with its complement."""
    sizes = torch.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes)).double()
    pairs = (samples + 1) // 2
    s = sizes[torch.multinomial(p / p.sum(), pairs, replacement=True, generator=generator)]  # (pairs,)
    # a uniform subset of size s: the s smallest of M uniform keys
    keys = torch.rand(pairs, m, generator=generator)
    rank = keys.argsort(1).argsort(1)
    z = rank < s.unsqueeze(1)
    return torch.cat([z, ~z])


def kernel_shap(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                baselines: Tensor | float | None = None, feature_mask: Tensor | None = None, samples: int = 2048,
                per_feature: bool = False, generator: torch.Generator | None = None,
                batch_size: int | None = None) -> Tensor:
    """Kernel SHAP values (see the module docstring): enumeration when ``2^M - 2 <= samples``, else ``samples``
    coalitions drawn from the Shapley kernel with ``generator``."""
    method = "kernel_shap"
    model, x, refs, mask, m, bs = _prepare(model, inputs, target, baselines, feature_mask, batch_size, method)
    check_positive_int(samples, "samples", method)
    b = x.shape[0]
    if m < 30 and 2 ** m - 2 <= samples:
        codes = torch.arange(1, 2 ** m - 1)
        z = ((codes.unsqueeze(1) >> torch.arange(m)) & 1).bool()
        weights = torch.tensor([shapley_kernel_weight(m, int(k)) for k in z.sum(1)], dtype=torch.float64)
    else:
        z = _sample_coalitions(m, samples, generator)
        weights = torch.ones(z.shape[0], dtype=torch.float64)
    ends = torch.stack([torch.zeros(m, dtype=torch.bool), torch.ones(m, dtype=torch.bool)])
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        v_ends = coalition_values(model, x, refs, t, ends.to(x.device), mask, method, bs)  # (B, 2): v({}), v(all)
        v = coalition_values(model, x, refs, t, z.to(x.device), mask, method, bs) if m > 1 else None
    v0, delta = v_ends[:, 0], v_ends[:, 1] - v_ends[:, 0]
    if m == 1:
        phi = delta.unsqueeze(1)
    else:
        zf = z.double()
        # phi_M = delta - sum_{i<M} phi_i  =>  v(S) - v0 - z_M delta = sum_{i<M} (z_i - z_M) phi_i
        a = zf[:, :-1] - zf[:, -1:]  # (K, M-1)
        rhs = (v - v0.unsqueeze(1) - zf[:, -1].unsqueeze(0) * delta.unsqueeze(1)).T  # (K, B)
        sw = weights.sqrt().unsqueeze(1)
        fit = torch.linalg.lstsq(sw * a, sw * rhs, driver="gelsd")
        if int(fit.rank) < m - 1:
            warnings.warn(f"kernel_shap: the {z.shape[0]} sampled coalitions determine only {int(fit.rank)} of the "
                          f"{m - 1} free values (the minimum-norm solution is returned); raise samples",
                          UserWarning, stacklevel=2)
        sol = fit.solution  # (M-1, B)
        phi = torch.cat([sol.T, (delta - sol.sum(0)).unsqueeze(1)], 1)
    assert phi.shape == (b, m)
    return phi.to(x.dtype) if per_feature else _spread(phi, mask, x)
