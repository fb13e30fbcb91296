"""Federated learning: IID and Dirichlet client splits, FedAvg and FedProx, masked (secure) aggregation, DP-SGD with
per-sample gradients and a Renyi-DP accountant; the Flower engine is in :mod:`.flower` (imported on use: flwr is the
``federated`` extra)."""

from tricklab.paradigms.federated.dp import (DEFAULT_ORDERS, clip_and_noise, dp_epsilon, epsilon_from_rdp,
                                             noise_for_epsilon, per_sample_grads, rdp_sampled_gaussian)
from tricklab.paradigms.federated.fedavg import DPSettings, client_update, secure_weighted_average, weighted_average
from tricklab.paradigms.federated.partition import dirichlet_split, iid_split
from tricklab.paradigms.federated.secagg import dequantize, mask_updates, masked_sum, quantize

__all__ = ["DEFAULT_ORDERS", "clip_and_noise", "dp_epsilon", "epsilon_from_rdp", "noise_for_epsilon",
           "per_sample_grads", "rdp_sampled_gaussian", "DPSettings", "client_update", "secure_weighted_average",
           "weighted_average", "dirichlet_split", "iid_split", "dequantize", "mask_updates", "masked_sum", "quantize"]
