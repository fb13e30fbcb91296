"""Meta-learning: N-way K-shot episodes, MAML (second and first order), Reptile and prototypical networks."""

from tricklab.paradigms.meta.episodes import Episode, EpisodeSampler, split_classes
from tricklab.paradigms.meta.maml import adapt, init_params, maml_query_loss, task_loss
from tricklab.paradigms.meta.protonets import ProtoNet, proto_logits, prototypes, squared_distances
from tricklab.paradigms.meta.reptile import reptile_step

__all__ = ["Episode", "EpisodeSampler", "split_classes", "adapt", "init_params", "maml_query_loss", "task_loss",
           "ProtoNet", "proto_logits", "prototypes", "squared_distances", "reptile_step"]
