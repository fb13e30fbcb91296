"""Whole training settings with their own loops: meta-learning (:mod:`.meta`), continual learning
(:mod:`.continual`), federated learning with privacy (:mod:`.federated`), architecture search (:mod:`.nas`),
generative models (:mod:`.generative`), and learning from little labelled data: self-supervised
(:mod:`.selfsup`), semi-supervised (:mod:`.semisup`), domain adaptation (:mod:`.domain`), one-/zero-shot
(:mod:`.fewshot`) and greedy layer-wise pretraining (:mod:`.pretrain`).

Each setting exposes a functional core (usable in any loop) and a ``run_<x>(config, *, seed, run_dir=None,
progress=None) -> ParadigmResult`` with its declared metrics, shaped for the lab's task kinds.
"""
