"""Run functions of the generative paradigm, shaped for the lab's task kinds (see PARADIGMS.md): ``run_vae`` and
``run_realnvp`` train a density model on Fashion-MNIST with the supervised :class:`tricklab.train.Trainer`
(the model's forward returns the per-example loss, the trainer minimises its mean) and report test bits per
dimension. Each is pure of global state apart from the torch thread count and the global seed it sets, and
deterministic for a seed on the CPU.

Data: Fashion-MNIST's 60,000 training images (8-bit, scaled to k / 255) and the first ``test_examples`` test
images. The logistic VAE models the 256 levels directly (a discrete likelihood); RealNVP models uniformly
dequantized pixels (k + U) / 256 and reports the bound ``-E[log p(u)] / (D ln 2) + 8`` bits per dimension
(Theis et al. 2016), so both numbers are bits per dimension of the same 8-bit data. The Bernoulli VAE trains and
is evaluated on pixels binarized at 0.5 (a different data set, reported under the same key).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.errors import ConfigError
from tricklab.generative.result import ParadigmResult, write_result
from tricklab.generative.realnvp import RealNVP, dequantize, realnvp_image
from tricklab.generative.vae import DECODERS, VAE, bits_per_dim, gaussian_kl
from tricklab.train import Trainer
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["ParadigmResult", "RealNVPConfig", "VAEConfig", "run_realnvp", "run_vae"]

_LOG256 = math.log(256.0)


def _check(cond: bool, name: str, valid: str, value: object) -> None:
    if not cond:
        raise ConfigError(f"{name} must be {valid}, got {value!r}")


def _pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass
class _Common:
    """Budget and data shared by both models (short CPU runs; the papers train for days on GPUs)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    test_examples: int = 2000
    log_every: int = 100
    threads: int = 1
    data_dir: str | None = None

    def _validate_common(self) -> None:
        for name in ("steps", "batch_size", "test_examples", "log_every", "threads"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number", self.lr)
        _check(self.test_examples <= 10000, "test_examples", "at most 10000 (the Fashion-MNIST test set)",
               self.test_examples)


@dataclass
class VAEConfig(_Common):
    """An MLP VAE (784 -> hidden -> hidden -> 2 x latent_dim and back); ``iwae_k`` samples for the test bound."""

    latent_dim: int = 32
    hidden: int = 256
    decoder: str = "logistic"
    beta: float = 1.0
    iwae_k: int = 100

    def __post_init__(self) -> None:
        self._validate_common()
        for name in ("latent_dim", "hidden", "iwae_k"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(self.decoder in DECODERS, "decoder", f"one of {DECODERS}", self.decoder)
        _check(isinstance(self.beta, (int, float)) and self.beta > 0, "beta", "a number > 0 (1: the VAE)", self.beta)


@dataclass
class RealNVPConfig(_Common):
    """A single-scale RealNVP (see :func:`tricklab.generative.realnvp.realnvp_image`)."""

    hidden: int = 32
    blocks: int = 3
    alpha: float = 0.05
    dequant_samples: int = 4

    def __post_init__(self) -> None:
        self._validate_common()
        for name in ("hidden", "blocks", "dequant_samples"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(isinstance(self.alpha, float) and 0 < self.alpha < 0.5, "alpha", "a float in (0, 0.5)", self.alpha)


class _ProgressHook(Technique):
    """Hands every new history row to the run's progress callback."""

    name: ClassVar[str] = "paradigm_progress"

    def __init__(self, progress: Callable[[dict[str, Any]], None]) -> None:
        self.progress = progress

    def on_log(self, state: TrainState) -> None:
        self.progress(dict(state.history[-1]))


class _DequantizedNLL(nn.Module):
    """Training wrapper: dequantize the batch, return per-example -log p(u) per dimension (nats)."""

    def __init__(self, flow: RealNVP) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        u = dequantize(x)
        return -self.flow.log_prob(u) / u[0].numel()


def _mean_loss(out: Tensor, _target: Tensor) -> Tensor:
    return out.mean()


def _data(cfg: _Common, binarize: bool) -> tuple[Tensor, Tensor, Tensor]:
    ds = load_dataset("fashion-mnist", data_dir=cfg.data_dir)
    x_train, y_train, x_test = ds.x_train, ds.y_train, ds.x_test[: cfg.test_examples]
    if binarize:
        x_train, x_test = (x_train > 0.5).float(), (x_test > 0.5).float()
    return x_train, y_train, x_test


def _fit(model: nn.Module, cfg: _Common, x: Tensor, y: Tensor, seed: int,
         progress: Callable[[dict[str, Any]], None] | None) -> TrainState:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    techniques: list[Technique] = [_ProgressHook(progress)] if progress is not None else []
    trainer = Trainer(model, opt, InMemoryLoader(x, y, cfg.batch_size, seed=seed), loss_fn=_mean_loss,
                      techniques=techniques, max_steps=cfg.steps, log_every=cfg.log_every)
    return trainer.fit()


def _grid(images: Tensor) -> list[list[list[float]]]:
    return [[[round(float(v), 3) for v in row] for row in img.reshape(28, 28)] for img in images.clamp(0, 1)]


def run_vae(config: VAEConfig, *, seed: int, run_dir: Path | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train a VAE on Fashion-MNIST and report the test IWAE bound (k = ``iwae_k``) and ELBO in bits/dim."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    binarize = config.decoder == "bernoulli"
    x_train, y_train, x_test = _data(config, binarize)
    model = VAE(784, config.latent_dim, config.hidden, config.decoder, config.beta)
    state = _fit(model, config, x_train.flatten(1), y_train, seed, progress)
    model.eval()
    torch.manual_seed(seed + 1_000_003)  # evaluation noise: fixed per seed, apart from the training stream
    iwae, elbos, kls = [], [], []
    with torch.no_grad():
        for i in range(0, len(x_test), 100):
            xb = x_test[i : i + 100].flatten(1)
            iwae.append(model.iwae(xb, config.iwae_k))
            mu, logvar = model.encode(xb)
            kl = gaussian_kl(mu, logvar)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            elbos.append(model.log_px_z(xb, z) - kl)  # the ELBO (beta = 1), whatever beta trained it
            kls.append(kl)
        samples = model.sample(16, generator=torch.Generator().manual_seed(seed))
        recon = model.reconstruct(x_test[:8].flatten(1))
    metrics = {"test_bpd": float(bits_per_dim(torch.cat(iwae).mean(), 784)),
               "test_elbo_bpd": float(bits_per_dim(torch.cat(elbos).mean(), 784)),
               "test_kl": float(torch.cat(kls).mean()), "train_seconds": state.train_seconds}
    extras = {"config": asdict(config), "seed": seed, "data": "binarized" if binarize else "8-bit",
              "samples": _grid(samples), "reconstructions": _grid(recon), "originals": _grid(x_test[:8])}
    return write_result(ParadigmResult(metrics, list(state.history), extras), run_dir)


def run_realnvp(config: RealNVPConfig, *, seed: int, run_dir: Path | None = None,
                progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train a RealNVP on dequantized Fashion-MNIST and report test bits/dim (mean over ``dequant_samples``
    dequantizations of each test image)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    x_train, y_train, x_test = _data(config, binarize=False)
    flow = realnvp_image(1, 28, config.hidden, config.blocks, logit=True, alpha=config.alpha)
    wrapper = _DequantizedNLL(flow)
    state = _fit(wrapper, config, x_train, y_train, seed, progress)
    flow.eval()
    g = torch.Generator().manual_seed(seed + 1_000_003)
    lls = []
    with torch.no_grad():
        for _ in range(config.dequant_samples):
            for i in range(0, len(x_test), 200):
                lls.append(flow.log_prob(dequantize(x_test[i : i + 200], generator=g)))
        samples = flow.sample(16, generator=torch.Generator().manual_seed(seed))
    ll = torch.cat(lls).mean()
    # log P(x) >= E log p(u) - D log 256 (dequantization bound); bits/dim of the 8-bit data
    test_bpd = float(bits_per_dim(ll - 784 * _LOG256, 784))
    # the last log row's mean training loss (nats per dimension of u) as bits/dim of the 8-bit data
    losses = [r["train_loss"] for r in state.history if "train_loss" in r]
    train_bpd = (losses[-1] + _LOG256) / math.log(2.0) if losses else float("nan")
    metrics = {"test_bpd": test_bpd, "train_bpd": float(train_bpd), "train_seconds": state.train_seconds}
    extras = {"config": asdict(config), "seed": seed, "data": "8-bit, dequantized", "samples": _grid(samples)}
    return write_result(ParadigmResult(metrics, list(state.history), extras), run_dir)
