"""Generative models and representations (issue 20): the VAE and its importance-weighted bound, RealNVP, the
REINFORCE and pathwise gradient estimators, word2vec (skip-gram with negative sampling).

Each model is a functional core (pure functions on tensors) plus a thin nn.Module shell; the run functions in
:mod:`tricklab.paradigms.generative.paradigm` train them on real data for the lab, with the metrics declared in
:mod:`tricklab.paradigms.generative.metrics`. Submodules are imported where used, so this package stays cheap to import.
"""
