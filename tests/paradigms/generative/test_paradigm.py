"""The generative run functions: tiny budgets on real Fashion-MNIST (skipped where the IDX files are missing);
metrics exactly as declared, deterministic for a seed, JSON written atomically, bad configs refused. The
numbers themselves are references checked elsewhere (bits/dim formula, IWAE and flow log-likelihoods)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tricklab.data.datasets.fashion_mnist import DEFAULT_DIR
from tricklab.errors import ConfigError
from tricklab.paradigms.generative.metrics import REALNVP_METRICS, VAE_METRICS
from tricklab.paradigms.generative.paradigm import RealNVPConfig, VAEConfig, run_realnvp, run_vae

needs_data = pytest.mark.skipif(not DEFAULT_DIR.is_dir(), reason="Fashion-MNIST IDX files not installed")


@needs_data
def test_run_vae_is_deterministic_and_reports_the_declared_metrics(tmp_path: Path) -> None:
    cfg = VAEConfig(steps=4, batch_size=16, test_examples=20, iwae_k=5, log_every=2, hidden=32, latent_dim=4)
    rows: list[dict] = []
    a = run_vae(cfg, seed=0, run_dir=tmp_path, progress=rows.append)
    b = run_vae(cfg, seed=0)
    assert set(a.metrics) == {m.key for m in VAE_METRICS}
    assert {k: v for k, v in a.metrics.items() if k != "train_seconds"} == \
        {k: v for k, v in b.metrics.items() if k != "train_seconds"}
    assert all(math.isfinite(v) for v in a.metrics.values())
    # the IWAE bound is at least as tight as the ELBO on average (k = 5 >= 1), so fewer bits per dim
    assert a.metrics["test_bpd"] <= a.metrics["test_elbo_bpd"] + 0.01
    assert [r["step"] for r in rows] == [2, 4] and all("seconds" in r for r in a.history)
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["test_bpd"] == a.metrics["test_bpd"]
    assert len(a.extras["samples"]) == 16 and len(a.extras["samples"][0]) == 28


@needs_data
def test_run_realnvp_is_deterministic_and_reports_the_declared_metrics() -> None:
    cfg = RealNVPConfig(steps=2, batch_size=8, test_examples=10, hidden=4, blocks=1, dequant_samples=1,
                        log_every=1)
    a = run_realnvp(cfg, seed=1)
    b = run_realnvp(cfg, seed=1)
    assert set(a.metrics) == {m.key for m in REALNVP_METRICS}
    assert a.metrics["test_bpd"] == b.metrics["test_bpd"] and math.isfinite(a.metrics["test_bpd"])
    assert a.metrics["test_bpd"] > 0


@pytest.mark.parametrize(("cls", "field", "value"), [
    (VAEConfig, "steps", 0), (VAEConfig, "decoder", "gauss"), (VAEConfig, "beta", -1.0),
    (VAEConfig, "test_examples", 20000), (RealNVPConfig, "alpha", 0.7), (RealNVPConfig, "lr", 0.0),
])
def test_bad_configs_name_the_field(cls: type, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        cls(**{field: value})


@needs_data
def test_run_gan_reports_the_declared_metrics_with_ordered_references() -> None:
    from tricklab.paradigms.generative.metrics import GAN_METRICS
    from tricklab.paradigms.generative.paradigm import GANConfig, run_gan

    cfg = GANConfig(steps=2, batch_size=8, width=4, latent_dim=4, classifier_steps=3, eval_examples=200,
                    log_every=1)
    a = run_gan(cfg, seed=0)
    assert set(a.metrics) == {m.key for m in GAN_METRICS}
    assert [r["step"] for r in a.history] == [1, 2]
    # real held-out images sit far closer to the test set than uniform noise in any sensible feature space
    assert a.metrics["frechet_real_reference"] < a.metrics["frechet_noise_reference"]
    assert run_gan(cfg, seed=0).metrics["frechet_distance"] == a.metrics["frechet_distance"]
    with pytest.raises(ConfigError, match="eval_examples"):
        GANConfig(eval_examples=1)
    wgan = run_gan(GANConfig(**{**cfg.__dict__, "loss": "wgan-gp", "n_critic": 2}), seed=0)
    assert set(wgan.metrics) == set(a.metrics) and all(math.isfinite(v) for v in wgan.metrics.values())
    assert wgan.metrics["frechet_distance"] != a.metrics["frechet_distance"]  # the critic objective was used
