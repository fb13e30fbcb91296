"""Declared metrics of this package's run functions (one MetricSpec per reported number)."""

from __future__ import annotations

from tricklab.evaluate.declared import MetricSpec

__all__ = ["DANN_METRICS", "FEWSHOT_METRICS", "GREEDY_METRICS", "SELFSUP_METRICS", "SEMISUP_METRICS",
           "TRANSFER_METRICS"]

SELFSUP_METRICS: list[MetricSpec] = [
    MetricSpec("probe_acc", "linear-probe test accuracy", True),
    MetricSpec("knn_acc", "k-NN test accuracy (k=20, cosine)", True),
    MetricSpec("pretrain_loss", "final pretraining loss", False, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

SEMISUP_METRICS: list[MetricSpec] = [
    MetricSpec("test_acc", "test accuracy", True),
    MetricSpec("pseudo_label_acc", "accuracy of confident pseudo-labels", True, verdict=False),
    MetricSpec("mask_rate", "fraction of unlabelled examples above the threshold", True, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

FEWSHOT_METRICS: list[MetricSpec] = [
    MetricSpec("oneshot_acc", "N-way K-shot accuracy on unseen classes (siamese)", True),
    MetricSpec("oneshot_random_acc", "same episodes, untrained encoder", True, verdict=False),
    MetricSpec("oneshot_raw_acc", "same episodes, raw inputs", True, verdict=False),
    MetricSpec("zeroshot_acc", "zero-shot accuracy on unseen classes (ESZSL)", True),
    MetricSpec("zeroshot_chance", "zero-shot chance level", True, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

GREEDY_METRICS: list[MetricSpec] = [
    MetricSpec("test_acc", "test accuracy after fine-tuning", True),
    MetricSpec("train_loss", "training loss after fine-tuning", False),
    MetricSpec("pretrain_seconds", "pretraining time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
    MetricSpec("seconds", "total time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

DANN_METRICS: list[MetricSpec] = [
    MetricSpec("target_acc", "target-domain test accuracy", True),
    MetricSpec("source_acc", "source-domain test accuracy", True),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

TRANSFER_METRICS: list[MetricSpec] = [
    *[MetricSpec(f"{m}_acc", f"{m.replace('_', ' ')}: 5-way test accuracy on the target classes", True)
      for m in ("scratch", "linear_probe", "finetune", "adapters", "lora")],
    *[MetricSpec(f"{m}_trained_params", f"{m.replace('_', ' ')}: trained parameters", False, verdict=False,
                 fmt=".0f") for m in ("scratch", "linear_probe", "finetune", "adapters", "lora")],
    MetricSpec("source_acc", "pretrained backbone: accuracy on the source classes", True, verdict=False),
    MetricSpec("seconds", "total time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]
