"""Explanations and audits for any ``nn.Module`` classifier.

* attributions, each ``f(model, inputs, target, ...) -> Tensor`` shaped like the inputs (Grad-CAM: like the
  layer, one channel): :func:`vanilla_gradient`, :func:`gradient_x_input`, :func:`smoothgrad`,
  :func:`integrated_gradients`, :func:`grad_cam`, :func:`grad_cam_plus_plus`, :func:`gradient_shap`,
  :func:`deeplift`, :func:`deeplift_shap`, :func:`kernel_shap`, :func:`exact_shapley`; by name in
  :data:`ATTRIBUTIONS` (``tricklab.explain.methods``);
* counterfactuals: :func:`wachter_counterfactual`, :func:`diverse_counterfactuals`;
* faithfulness: :func:`deletion_curve`, :func:`insertion_curve`, :func:`faithfulness_scores`;
* sanity check (Adebayo et al. 2018): :func:`randomized_copy`, :func:`spearman_per_example`;
* fairness audit: :func:`fairness_report` and the metrics in ``tricklab.explain.fairness``;
* the ``tricklab explain`` page: :func:`tricklab.explain.report.explain_run` (imported on use: it needs
  matplotlib).

See docs/explain/ for one page per method.
"""

from __future__ import annotations

from tricklab.explain.counterfactual import CounterfactualResult, diverse_counterfactuals, wachter_counterfactual
from tricklab.explain.deeplift import SUPPORTED_NONLINEAR, deeplift, deeplift_shap
from tricklab.explain.faithfulness import (
    curve_area,
    deletion_curve,
    faithfulness_scores,
    insertion_curve,
)
from tricklab.explain.fairness import fairness_report, group_rates
from tricklab.explain.gradcam import grad_cam, grad_cam_plus_plus, upsample_to_input
from tricklab.explain.gradient_shap import GradientShapDraws, gradient_shap
from tricklab.explain.gradients import gradient_x_input, smoothgrad, vanilla_gradient
from tricklab.explain.integrated_gradients import completeness_residual, integrated_gradients
from tricklab.explain.methods import ATTRIBUTIONS, attribute
from tricklab.explain.sanity import randomized_copy, spearman_per_example
from tricklab.explain.shapley import exact_shapley, kernel_shap

__all__ = [
    "ATTRIBUTIONS",
    "CounterfactualResult",
    "GradientShapDraws",
    "SUPPORTED_NONLINEAR",
    "attribute",
    "completeness_residual",
    "curve_area",
    "deeplift",
    "deeplift_shap",
    "deletion_curve",
    "diverse_counterfactuals",
    "exact_shapley",
    "fairness_report",
    "faithfulness_scores",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradient_shap",
    "gradient_x_input",
    "group_rates",
    "insertion_curve",
    "integrated_gradients",
    "kernel_shap",
    "randomized_copy",
    "smoothgrad",
    "spearman_per_example",
    "upsample_to_input",
    "vanilla_gradient",
    "wachter_counterfactual",
]
