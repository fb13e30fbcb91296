"""DP-SGD's functional core for the federated clients: per-sample gradients, clipping and noise, and the RDP
accountant. They live in :mod:`tricklab.optim.dp_sgd` (a gradient transform, also behind the ``dp_sgd``
technique of the trainer); this module re-exports them for the federated code."""

from tricklab.optim.dp_sgd import (DEFAULT_ORDERS, clip_and_noise, dp_epsilon, epsilon_from_rdp, noise_for_epsilon,
                                   per_sample_grads, rdp_sampled_gaussian)

__all__ = ["DEFAULT_ORDERS", "per_sample_grads", "clip_and_noise", "rdp_sampled_gaussian", "epsilon_from_rdp",
           "dp_epsilon", "noise_for_epsilon"]
