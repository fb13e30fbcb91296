"""Declared metrics of the generative runs (:mod:`tricklab.paradigms.generative.paradigm`), one per reported number.

Bits per dimension are on 8-bit Fashion-MNIST pixels for the logistic VAE and RealNVP, so the two are
comparable (lower is better; 8.0 is a uniform distribution over the 256 levels). The Bernoulli VAE reports bits
per dimension of binarized pixels, a different data set: compare it only with itself.
"""

from __future__ import annotations

from tricklab.evaluate.declared import MetricSpec

__all__ = ["BERT_VARIANT_METRICS", "CLIP_METRICS", "GAN_METRICS", "REALNVP_METRICS", "VAE_METRICS", "WORD2VEC_METRICS"]

VAE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("test_bpd", "Test bits/dim, IWAE bound (k samples)", False, "bits/dim"),
    MetricSpec("test_elbo_bpd", "Test bits/dim, ELBO", False, "bits/dim"),
    MetricSpec("test_kl", "Test KL(q(z|x) || p(z)) (nats per image)", False, "nats", verdict=False, fmt=".2f"),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)

REALNVP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("test_bpd", "Test bits/dim (dequantized bound)", False, "bits/dim"),
    MetricSpec("train_bpd", "Training bits/dim, last logging interval", False, "bits/dim", verdict=False),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)

WORD2VEC_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("wordsim353_spearman", "WordSim-353 Spearman rho (pairs in vocabulary)", True),
    MetricSpec("simlex999_spearman", "SimLex-999 Spearman rho (pairs in vocabulary)", True),
    MetricSpec("analogy_accuracy", "Analogy accuracy, 3CosAdd (questions in vocabulary)", True),
    MetricSpec("words_per_second", "Training words per CPU second (1 thread)", True, "words/s", verdict=False,
               fmt=".0f"),
    MetricSpec("train_seconds", "Training CPU time (s)", False, "s", verdict=False, fmt=".1f"),
)

GAN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("frechet_distance", "Frechet distance (ours: our CNN's features), samples vs test", False, fmt=".3f"),
    MetricSpec("frechet_real_reference", "Frechet distance (ours), held-out real images vs test", False,
               verdict=False, fmt=".3f"),
    MetricSpec("frechet_noise_reference", "Frechet distance (ours), uniform noise vs test", False, verdict=False,
               fmt=".3f"),
    MetricSpec("precision", "Improved precision (k=3, our CNN's features): samples inside the test images' "
               "manifold", True, fmt=".3f"),
    MetricSpec("recall", "Improved recall (k=3, our CNN's features): test images inside the samples' manifold",
               True, fmt=".3f"),
    MetricSpec("precision_real_reference", "Improved precision of held-out real images (ceiling)", True,
               verdict=False, fmt=".3f"),
    MetricSpec("recall_real_reference", "Improved recall of held-out real images (ceiling)", True,
               verdict=False, fmt=".3f"),
    MetricSpec("classifier_accuracy", "Feature classifier's accuracy on the evaluation test images", True,
               verdict=False),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)

CLIP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("zero_shot_accuracy", "Zero-shot accuracy by class prompts", True),
    MetricSpec("linear_probe_accuracy", "Linear probe accuracy on frozen image embeddings", True),
    MetricSpec("recall_at_1", "Image -> caption recall@1 (distinct test captions)", True),
    MetricSpec("recall_at_5", "Image -> caption recall@5 (distinct test captions)", True),
    MetricSpec("chance_accuracy", "Chance accuracy (10 classes)", True, verdict=False),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)

BERT_VARIANT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("mlm_accuracy", "Masked-LM accuracy, held-out text (one fixed mask)", True),
    MetricSpec("mlm_loss", "Masked-LM cross-entropy, held-out text (nats)", False),
    MetricSpec("plays_accuracy", "Plays accuracy after fine-tuning the encoder", True),
    MetricSpec("parameters", "Parameters of the masked-LM model", False, verdict=False, fmt=",.0f"),
    MetricSpec("pretrain_cpu_seconds", "Pre-training CPU time (s, 1 thread)", False, "s", verdict=False, fmt=".1f"),
    MetricSpec("finetune_cpu_seconds", "Fine-tuning CPU time (s, 1 thread)", False, "s", verdict=False, fmt=".1f"),
)
