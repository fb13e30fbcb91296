"""One-shot and zero-shot learning on classes unseen in training: N-way K-shot episodes and a siamese network
(:mod:`.siamese`), ESZSL with attribute tables made by code (:mod:`.zeroshot`), and ``run_fewshot``
(:mod:`.run`)."""

from tricklab.paradigms.fewshot.siamese import FewShotEpisode, FewShotEpisodeSampler, SiameseNet, episode_accuracy
from tricklab.paradigms.fewshot.zeroshot import eszsl_fit, eszsl_predict, fashion_mnist_attributes

__all__ = ["FewShotEpisode", "FewShotEpisodeSampler", "SiameseNet", "episode_accuracy", "eszsl_fit",
           "eszsl_predict", "fashion_mnist_attributes"]
