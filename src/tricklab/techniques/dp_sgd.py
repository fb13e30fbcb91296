"""DP-SGD (Abadi et al., 2016) in the trainer: the batch's gradients replaced by the clipped, noised mean of its
per-example gradients, with an RDP accountant reporting epsilon for a delta.

At ``after_backward`` (the recomputed-gradients stage, like SAM) the per-example gradients g_i of the trainer's
loss function are taken with ``torch.func`` (vmap of grad) on the batch's inputs, each clipped to norm C, summed,
noised with N(0, sigma^2 C^2 I) and divided by the batch size B (Abadi et al., Algorithm 1):
    g~ = (sum_i g_i / max(1, ||g_i|| / C) + N(0, sigma^2 C^2 I)) / B.
The functional core is :mod:`tricklab.optim.dp_sgd` (``per_sample_grads``, ``clip_and_noise``, the accountant);
the noise comes from the technique's own seeded generator (exact resume).

Accounting: a step samples a batch of B of the N training examples, rate q = B / N = 1 / batches_per_epoch; after
T steps epsilon = dp_epsilon(q, sigma, T, delta) (sampled Gaussian mechanism, Mironov et al. 2019; the shuffled
fixed-size batches of the loader are accounted as Poisson sampling at that rate, the usual approximation of
opacus and TF Privacy). Each logged row gets ``dp_epsilon``.

Refused with a ConfigError: batch norm (a batch-norm output depends on the other examples of the batch, so a
per-example gradient is undefined: use group norm), gradient accumulation and multi-process training (the noise
and the sampling rate would be those of a micro-batch / a rank).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.optim.dp_sgd import clip_and_noise, dp_epsilon, per_sample_grads
from tricklab.techniques._seeded import SeededTechnique
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState

__all__ = ["DPSGD", "check_no_batch_norm"]


def check_no_batch_norm(model: nn.Module, who: str = "dp_sgd") -> None:
    """ConfigError naming the first batch-norm module of ``model`` (per-example gradients are undefined)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"{who}: the model has batch norm ({name or 'the model'}: {type(m).__name__}); batch norm mixes "
                "the examples of a batch, so per-example gradients (and DP-SGD's privacy) are undefined. Use "
                "group norm instead (torch.nn.GroupNorm, e.g. the model's norm='group' option where it has one)")


@register_technique
class DPSGD(SeededTechnique):
    """DP-SGD: per-example clipping to ``clip`` and Gaussian noise of std ``noise_multiplier * clip``; reports
    epsilon at ``delta`` (RDP accountant)."""

    name: ClassVar[str] = "dp_sgd"
    # recomputes the gradients from the batch (per example; dropout in the model draws new masks from the global
    # RNG) and noises them from its own stream; adds dp_epsilon to the logged row
    reads = frozenset({"batch.inputs", "batch.targets", "params", "accum_steps", "skip_step"})
    writes = frozenset({"grads.recomputed", "log_row", "rng"})

    def __init__(self, clip: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5, seed: int = 0) -> None:
        super().__init__(seed)
        if not clip > 0:
            raise ConfigError(f"dp_sgd clip must be > 0 (the per-example gradient norm bound), got {clip!r}")
        if not noise_multiplier > 0:
            raise ConfigError(f"dp_sgd noise_multiplier must be > 0 (noise std / clip), got {noise_multiplier!r}")
        if not 0 < delta < 1:
            raise ConfigError(f"dp_sgd delta must be in (0, 1) (e.g. 1e-5, below 1 / training examples), got "
                              f"{delta!r}")
        self.clip, self.noise_multiplier, self.delta = float(clip), float(noise_multiplier), float(delta)
        self.steps = 0  # noised steps taken (the accountant's T)
        self.sample_rate: float | None = None

    def on_fit_start(self, state: TrainState) -> None:
        check_no_batch_norm(state.model)
        if state.accum_steps != 1:
            raise ConfigError("dp_sgd clips and noises the gradient of each optimizer step's batch: it cannot be "
                              "combined with grad_accumulation (make the batch larger instead)")
        if state.world_size != 1:
            raise ConfigError("dp_sgd runs in one process: under multi-process training every rank would add its "
                              "own noise to its own share of the batch")
        if not state.batches_per_epoch:
            raise ConfigError("dp_sgd needs the number of batches per epoch (the sampling rate B / N)")
        self.sample_rate = 1.0 / state.batches_per_epoch

    def on_after_backward(self, state: TrainState) -> None:
        if state.skip_step:
            return
        named = {k: p for k, p in state.model.named_parameters() if p.requires_grad}
        params = {k: p.detach() for k, p in named.items()}
        grads = per_sample_grads(state.model, params, state.inputs, state.targets, loss_fn=state.loss_fn)
        noised = clip_and_noise(grads, self.clip, self.noise_multiplier, float(len(state.inputs)), self.generator)
        for k, p in named.items():
            p.grad = noised[k].to(p.dtype)
        self.steps += 1

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (0 before the first step)."""
        if not self.steps or self.sample_rate is None:
            return 0.0
        return dp_epsilon(self.sample_rate, self.noise_multiplier, self.steps, self.delta)

    def on_log(self, state: TrainState) -> None:
        state.history[-1]["dp_epsilon"] = self.epsilon()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"generator", "steps"}:
            raise ValueError(f"dp_sgd state must be {{'generator', 'steps'}} (from state_dict()), got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        super().load_state_dict({"generator": state["generator"]})
        self.steps = int(state["steps"])
