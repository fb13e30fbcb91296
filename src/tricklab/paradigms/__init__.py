"""Whole training settings with their own loops: meta-learning (:mod:`.meta`), continual learning
(:mod:`.continual`), federated learning with privacy (:mod:`.federated`) and architecture search (:mod:`.nas`).

Each setting exposes a functional core (usable in any loop) and a ``run_<x>(config, *, seed, run_dir=None,
progress=None) -> ParadigmResult`` with its declared metrics, shaped for the lab's task kinds.
"""
