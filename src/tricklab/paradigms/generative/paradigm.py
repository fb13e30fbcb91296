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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.errors import ConfigError
from tricklab.paradigms.generative.result import ParadigmResult, write_result
from tricklab.paradigms.generative.realnvp import RealNVP, dequantize, realnvp_image
from tricklab.paradigms.generative.vae import DECODERS, VAE, bits_per_dim, gaussian_kl
from tricklab.train import Trainer
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["GANConfig", "ParadigmResult", "RealNVPConfig", "VAEConfig", "run_gan", "run_realnvp", "run_vae"]

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
    """A single-scale RealNVP (see :func:`tricklab.paradigms.generative.realnvp.realnvp_image`)."""

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


@dataclass
class GANConfig:
    """DCGAN-small on Fashion-MNIST (Adam 2e-4, beta1 0.5: the DCGAN paper's), scored by the Frechet distance
    in the 64-feature space of our own CNN classifier (tricklab.models.cnn2d), trained once per run with the
    fixed ``classifier_seed`` so every GAN seed is measured in the same feature space. ``loss="wgan-gp"``
    trains a WGAN-GP critic instead (``n_critic`` critic steps on fresh real batches per generator step, penalty
    weight ``gp_weight``, Adam betas (0, 0.9) as in Gulrajani et al. 2017; ``lr`` is used as given)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    latent_dim: int = 64
    width: int = 32
    spectral: bool = False
    loss: str = "nonsaturating"
    gp_weight: float = 10.0
    n_critic: int = 5
    classifier_steps: int = 600
    classifier_seed: int = 0
    eval_examples: int = 2000
    log_every: int = 100
    threads: int = 1
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "latent_dim", "width", "classifier_steps", "eval_examples",
                     "log_every", "threads"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number", self.lr)
        _check(2 <= self.eval_examples <= 10000, "eval_examples", "in 2..10000", self.eval_examples)
        _check(self.loss in ("nonsaturating", "wgan-gp"), "loss", "'nonsaturating' or 'wgan-gp'", self.loss)
        _check(_pos_int(self.n_critic), "n_critic", "a positive int", self.n_critic)
        _check(isinstance(self.gp_weight, (int, float)) and self.gp_weight >= 0, "gp_weight", "a number >= 0",
               self.gp_weight)
        _check(not (self.loss == "wgan-gp" and self.spectral), "spectral", "False with loss='wgan-gp' (the "
               "gradient penalty is the Lipschitz constraint)", self.spectral)


def _classifier_features(cfg: GANConfig, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                         ) -> tuple[Callable[[Tensor], Tensor], float]:
    """Train the feature network (seeded apart from the GAN) and return (features fn, its accuracy on the
    given test images)."""
    from tricklab.models.cnn2d import CNN2d

    with torch.random.fork_rng():
        torch.manual_seed(cfg.classifier_seed)
        clf = CNN2d((1, 28, 28), 10)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
        Trainer(clf, opt, InMemoryLoader(x_train, y_train, 128, seed=cfg.classifier_seed),
                max_steps=cfg.classifier_steps, log_every=cfg.classifier_steps).fit()
    clf.eval()

    @torch.no_grad()
    def features(x: Tensor) -> Tensor:
        return torch.cat([clf.pool(clf.features(x[i : i + 500])).flatten(1) for i in range(0, len(x), 500)])

    with torch.no_grad():
        acc = float((torch.cat([clf(x_test[i : i + 500]) for i in range(0, len(x_test), 500)]).argmax(1)
                     == y_test).float().mean())
    return features, acc


def run_gan(config: GANConfig, *, seed: int, run_dir: Path | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train the DCGAN (non-saturating loss) and report the Frechet distance (ours) of 'eval_examples'
    samples to as many test images, beside two references: held-out real training images (a floor) and
    uniform noise images (a ceiling); and the improved precision/recall (k = 3) of the samples against the test
    images in the same feature space, beside the held-out real images' (the ceiling)."""
    from tricklab.paradigms.generative.gan import (
        DCGANDiscriminator,
        DCGANGenerator,
        discriminator_loss,
        frechet_distance,
        gaussian_stats,
        generator_loss,
        gradient_penalty,
        wgan_critic_loss,
        wgan_generator_loss,
    )
    from tricklab.paradigms.generative.precision_recall import precision_recall

    torch.set_num_threads(config.threads)
    ds = load_dataset("fashion-mnist", data_dir=config.data_dir)
    n = config.eval_examples
    features, clf_acc = _classifier_features(config, ds.x_train, ds.y_train, ds.x_test[:n], ds.y_test[:n])
    torch.manual_seed(seed)
    gen, disc = DCGANGenerator(config.latent_dim, config.width), DCGANDiscriminator(config.width, config.spectral)
    wgan = config.loss == "wgan-gp"
    betas = (0.0, 0.9) if wgan else (0.5, 0.999)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=betas)
    loader = InMemoryLoader(ds.x_train, ds.y_train, config.batch_size, seed=seed)
    history: list[dict[str, Any]] = []
    t0, d_sum, g_sum = time.perf_counter(), 0.0, 0.0
    batches = iter(loader)

    def next_real() -> Tensor:
        nonlocal batches
        try:
            return next(batches)[0]
        except StopIteration:
            batches = iter(loader)
            return next(batches)[0]

    for step in range(1, config.steps + 1):
        for _ in range(config.n_critic if wgan else 1):
            real = next_real()
            fake = gen(torch.randn(len(real), config.latent_dim))
            if wgan:
                d_loss = (wgan_critic_loss(disc(real), disc(fake.detach()))
                          + gradient_penalty(disc, real, fake, config.gp_weight))
            else:
                d_loss = discriminator_loss(disc(real), disc(fake.detach()))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        g_loss = wgan_generator_loss(disc(fake)) if wgan else generator_loss(disc(fake))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        d_sum, g_sum = d_sum + float(d_loss.detach()), g_sum + float(g_loss.detach())
        if step % config.log_every == 0:
            row = {"step": step, "seconds": time.perf_counter() - t0, "d_loss": d_sum / config.log_every,
                   "g_loss": g_sum / config.log_every}
            history.append(row)
            d_sum = g_sum = 0.0
            if progress is not None:
                progress(dict(row))
    seconds = time.perf_counter() - t0
    gen.eval()
    g = torch.Generator().manual_seed(seed + 1_000_003)
    with torch.no_grad():
        fake = torch.cat([gen(torch.randn(min(500, n - i), config.latent_dim, generator=g))
                          for i in range(0, n, 500)])
    test_features = features(ds.x_test[:n])
    test_stats = gaussian_stats(test_features)
    held_out = ds.x_train[torch.randperm(len(ds.x_train), generator=g)[:n]]
    noise = torch.rand((n, 1, 28, 28), generator=g)
    fd = {name: float(frechet_distance(*gaussian_stats(features(x)), *test_stats))
          for name, x in (("frechet_distance", fake), ("frechet_real_reference", held_out),
                          ("frechet_noise_reference", noise))}
    # Improved precision/recall (k = 3) in the same feature space; held-out real images give the ceiling.
    precision, recall = precision_recall(test_features, features(fake), k=3)
    real_precision, real_recall = precision_recall(test_features, features(held_out), k=3)
    metrics = {**fd, "precision": precision, "recall": recall, "precision_real_reference": real_precision,
               "recall_real_reference": real_recall, "classifier_accuracy": clf_acc, "train_seconds": seconds}
    extras = {"config": asdict(config), "seed": seed, "samples": _grid(fake[:16])}
    return write_result(ParadigmResult(metrics, history, extras), run_dir)
