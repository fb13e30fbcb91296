"""Greedy layer-wise pretraining (seed 004's procedure): Bernoulli RBMs with CD-k (:mod:`.rbm`), stacked
(denoising) autoencoders or RBMs trained layer by layer (:mod:`.greedy`), and ``run_greedy`` (:mod:`.run`)."""

from tricklab.paradigms.pretrain.greedy import deep_sigmoid_mlp, greedy_pretrain, to_unit_interval
from tricklab.paradigms.pretrain.rbm import RBM, cd_statistics

__all__ = ["RBM", "cd_statistics", "deep_sigmoid_mlp", "greedy_pretrain", "to_unit_interval"]
