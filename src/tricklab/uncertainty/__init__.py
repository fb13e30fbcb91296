"""Uncertainty, calibration and out-of-distribution detection for any ``nn.Module`` (docs/uncertainty/).

* :mod:`~tricklab.uncertainty.mc_dropout` - MC dropout (only dropout layers in train mode).
* :mod:`~tricklab.uncertainty.ensemble` - deep ensembles as one vmapped model (torch.func), sequential reference.
* :mod:`~tricklab.uncertainty.bayes_by_backprop` - ELBO, KL scaling, predictive sampling (layers in
  :mod:`tricklab.layers.bayesian`).
* :mod:`~tricklab.uncertainty.gp` - exact GP heads, RBF/Matern kernels, deep kernel learning.
* :mod:`~tricklab.uncertainty.sngp` - spectral-norm bound and the random-feature GP output layer.
* :mod:`~tricklab.uncertainty.temperature` - temperature, vector and matrix scaling.
* :mod:`~tricklab.uncertainty.scores`, :mod:`~tricklab.uncertainty.ood` - uncertainty scores, AUROC, FPR at 95% TPR.
* :mod:`~tricklab.uncertainty.paradigm` - run functions for the lab (imported on use: it pulls in the trainer).
"""

from __future__ import annotations

from tricklab.uncertainty.bayes_by_backprop import ELBOLoss, bayes_predict, elbo_loss, kl_divergence, to_bayesian
from tricklab.uncertainty.ensemble import (
    SequentialEnsemble,
    VmapEnsemble,
    ensemble_log_probs,
    ensemble_loss,
    ensemble_predict_fn,
    make_members,
)
from tricklab.uncertainty.gp import (
    CholeskyError,
    DeepKernelGP,
    ExactGP,
    GPClassifier,
    MaternKernel,
    RBFKernel,
    robust_cholesky,
)
from tricklab.uncertainty.mc_dropout import MCPrediction, mc_dropout_mode, mc_dropout_predict
from tricklab.uncertainty.ood import auroc, fpr_at_tpr, ood_metrics
from tricklab.uncertainty.scores import (
    energy_score,
    entropy,
    expected_entropy,
    max_softmax_score,
    mutual_information,
    predictive_entropy,
)
from tricklab.uncertainty.sngp import RandomFeatureGP, fit_covariance, sngp_model, spectral_normalize
from tricklab.uncertainty.temperature import MatrixScaler, TemperatureScaler, VectorScaler, fit_temperature

__all__ = [
    "CholeskyError", "DeepKernelGP", "ELBOLoss", "ExactGP", "GPClassifier", "MCPrediction", "MaternKernel",
    "MatrixScaler", "RBFKernel", "RandomFeatureGP", "SequentialEnsemble", "TemperatureScaler", "VectorScaler",
    "VmapEnsemble", "auroc", "bayes_predict", "elbo_loss", "energy_score", "ensemble_log_probs", "ensemble_loss",
    "ensemble_predict_fn", "entropy", "expected_entropy", "fit_covariance", "fit_temperature", "fpr_at_tpr",
    "kl_divergence", "make_members", "max_softmax_score", "mc_dropout_mode", "mc_dropout_predict",
    "mutual_information", "ood_metrics", "predictive_entropy", "robust_cholesky", "sngp_model", "spectral_normalize",
    "to_bayesian",
]
