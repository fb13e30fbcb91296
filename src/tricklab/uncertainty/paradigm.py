"""Run functions of the uncertainty paradigms, shaped for the lab's task kinds (see PARADIGMS.md):
``run_uncertainty`` (one uncertainty method on MNIST-1D: calibration, OOD detection) and ``run_label_noise``
(one noisy-label technique). Each is pure of global state apart from the torch thread count it sets, and
deterministic for a seed on the CPU.

Every method trains with the supervised :class:`tricklab.train.Trainer`:

* ``plain``: the MNIST-1D paper ConvNet (or MLP, ``model="mlp"``) with dropout, cross-entropy; predicted in
  eval mode.
* ``mc_dropout``: the same network and training (bit-identical for a seed); predicted by ``mc_samples`` passes
  with only dropout active.
* ``ensemble``: ``members`` copies, seeds ``seed * 1000 + m``, trained as one :class:`VmapEnsemble` (loss: the
  sum of the members' cross-entropies); predicted by averaging the members' softmaxes.
* ``bayes_by_backprop``: the ConvNet (no dropout) with Gaussian variational layers, trained on the ELBO (mean NLL
  + KL / N); predicted by averaging ``bbb_samples`` weight samples.
* ``sngp``: the ConvNet body with spectrally normalised layers and a random-feature GP output layer, trained on
  cross-entropy; after training one pass over the training set fits the Laplace covariance, and predictions are
  the mean-field logits.

A fixed 10% of the training set (split seed 0, the same for every method and seed) is held out: it is the
evaluation set of the learning curves and the fitting set of temperature, vector and matrix scaling.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.data.noisy_labels import with_noisy_labels
from tricklab.data.shifted import load_shift
from tricklab.errors import ConfigError
from tricklab.layers.bayesian import GaussianPrior, ScaleMixturePrior, sampling
from tricklab.techniques.bootstrap_loss import BootstrapLoss
from tricklab.techniques.co_teaching import CoTeaching
from tricklab.techniques.gce_loss import GCELoss
from tricklab.train import Trainer
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique
from tricklab.uncertainty.bayes_by_backprop import ELBOLoss, to_bayesian
from tricklab.uncertainty.ensemble import VmapEnsemble, ensemble_loss, ensemble_predict_fn, make_members
from tricklab.uncertainty.mc_dropout import mc_dropout_mode
from tricklab.uncertainty.metrics import ood_metrics_of, predictive_metrics
from tricklab.uncertainty.models import mnist1d_cnn, mnist1d_cnn_body, mnist1d_mlp
from tricklab.uncertainty.sngp import RandomFeatureGP, fit_covariance, spectral_normalize
from tricklab.uncertainty.temperature import MatrixScaler, TemperatureScaler, VectorScaler

__all__ = [
    "LABEL_NOISE_TECHNIQUES",
    "METHODS",
    "LabelNoiseConfig",
    "ParadigmResult",
    "UncertaintyConfig",
    "run_label_noise",
    "run_uncertainty",
]

METHODS: tuple[str, ...] = ("plain", "mc_dropout", "ensemble", "bayes_by_backprop", "sngp")
LABEL_NOISE_TECHNIQUES: tuple[str, ...] = ("plain", "co_teaching", "bootstrap", "gce")


@dataclass
class ParadigmResult:
    """``metrics``: final numbers (keys as declared in :mod:`tricklab.uncertainty.metrics`); ``history``: rows with
    ``step`` and ``seconds`` (and evaluation values); ``extras``: JSON-able things a report may draw."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


def _check(cond: bool, name: str, valid: str, value: object) -> None:
    if not cond:
        raise ConfigError(f"{name} must be {valid}, got {value!r}")


def _pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass
class _Common:
    """Training settings shared by both paradigms: the MNIST-1D paper's (Adam 1e-2, batch 100, 6000 steps)."""

    steps: int = 6000
    batch_size: int = 100
    lr: float = 1e-2
    weight_decay: float = 0.0
    eval_every: int = 500
    threads: int = 1

    def _validate_common(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "threads"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number", self.lr)
        _check(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay",
               "a number >= 0", self.weight_decay)


@dataclass
class UncertaintyConfig(_Common):
    """One uncertainty method on MNIST-1D with OOD detection against a shifted set."""

    method: str = "plain"
    model: str = "cnn"
    dataset: str = "mnist1d"
    shift: str = "mnist1d-shuffled"
    dropout: float = 0.1
    val_fraction: float = 0.1
    mc_samples: int = 20
    members: int = 5
    bbb_samples: int = 20
    bbb_prior: str = "gaussian"
    bbb_prior_sigma: float = 1.0
    bbb_rho_init: float = -5.0
    bbb_kl_weight: float = 1.0
    bbb_local_reparam: bool = True
    sngp_bound: float = 0.95
    sngp_features: int = 1024
    calibrate: bool = True

    def __post_init__(self) -> None:
        self._validate_common()
        _check(self.method in METHODS, "method", f"one of {METHODS}", self.method)
        _check(self.model in ("cnn", "mlp"), "model", "'cnn' or 'mlp' (the MNIST-1D paper's networks)", self.model)
        _check(self.model == "cnn" or self.method not in ("bayes_by_backprop", "sngp"), "model",
               "'cnn' for methods bayes_by_backprop and sngp", self.model)
        _check(self.dataset == "mnist1d", "dataset", "'mnist1d' (the only data set these runs support yet)",
               self.dataset)
        _check(self.shift == "mnist1d-shuffled", "shift", "'mnist1d-shuffled' for dataset mnist1d", self.shift)
        _check(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "dropout", "in [0, 1)",
               self.dropout)
        _check(not (self.method == "mc_dropout" and self.dropout == 0), "dropout", "> 0 for method mc_dropout",
               self.dropout)
        _check(isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 0.5, "val_fraction",
               "in (0, 0.5)", self.val_fraction)
        for name in ("mc_samples", "members", "bbb_samples", "sngp_features"):
            _check(_pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        _check(self.bbb_prior in ("gaussian", "mixture"), "bbb_prior", "'gaussian' or 'mixture'", self.bbb_prior)
        _check(self.bbb_prior_sigma > 0, "bbb_prior_sigma", "positive", self.bbb_prior_sigma)
        _check(self.bbb_kl_weight >= 0, "bbb_kl_weight", ">= 0", self.bbb_kl_weight)
        _check(0 < self.sngp_bound, "sngp_bound", "positive", self.sngp_bound)


@dataclass
class LabelNoiseConfig(_Common):
    """One noisy-label technique on MNIST-1D with a fraction of the training labels flipped."""

    technique: str = "plain"
    noise: str = "symmetric"
    noise_fraction: float = 0.4
    noise_seed: int = 0
    forget_rate: float | None = None  # co-teaching tau; None = the noise fraction (the paper's choice)
    num_gradual: int = 10  # co-teaching T_k (epochs)
    bootstrap_mode: str = "hard"
    bootstrap_beta: float | None = None  # None: the paper's value for the mode (0.8 hard, 0.95 soft)
    gce_q: float = 0.7

    def __post_init__(self) -> None:
        self._validate_common()
        _check(self.technique in LABEL_NOISE_TECHNIQUES, "technique", f"one of {LABEL_NOISE_TECHNIQUES}",
               self.technique)
        _check(self.noise in ("symmetric", "class_dependent"), "noise", "'symmetric' or 'class_dependent'",
               self.noise)
        _check(isinstance(self.noise_fraction, (int, float)) and 0 <= self.noise_fraction < 1, "noise_fraction",
               "in [0, 1)", self.noise_fraction)
        _check(self.forget_rate is None or 0 <= self.forget_rate < 1, "forget_rate", "None or in [0, 1)",
               self.forget_rate)
        _check(self.bootstrap_mode in ("soft", "hard"), "bootstrap_mode", "'soft' or 'hard'", self.bootstrap_mode)
        _check(0 < self.gce_q <= 1, "gce_q", "in (0, 1]", self.gce_q)


class _ProgressHook(Technique):
    """Hands every new history row to the run's progress callback."""

    name: ClassVar[str] = "paradigm_progress"

    def __init__(self, progress: Callable[[dict[str, Any]], None]) -> None:
        self.progress = progress

    def on_log(self, state: TrainState) -> None:
        self.progress(dict(state.history[-1]))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    """``fn`` on batches of ``x``, outputs (S, B, C) concatenated along the example axis."""
    return torch.cat([fn(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)], dim=1)


def _sample_logits(method: str, model: nn.Module, x: Tensor, cfg: UncertaintyConfig) -> Tensor:
    """Per-sample logits (S, N, C) of the trained model under the method's predictive procedure."""
    model.eval()
    if method in ("plain", "sngp"):
        return _batched(lambda xb: model(xb).unsqueeze(0), x)
    if method == "ensemble":
        return _batched(model, x)
    if method == "mc_dropout":
        with mc_dropout_mode(model):
            return _batched(lambda xb: torch.stack([model(xb) for _ in range(cfg.mc_samples)]), x)
    with sampling(model):  # bayes_by_backprop
        return _batched(lambda xb: torch.stack([model(xb) for _ in range(cfg.bbb_samples)]), x)


def _log_mean_probs(sample_logits: Tensor) -> Tensor:
    """log of the predictive distribution (N, C): usable as logits by calibration maps."""
    z = torch.log_softmax(sample_logits.double(), -1)
    return torch.logsumexp(z, 0) - math.log(z.shape[0])


def _calibration(val_logits: Tensor, y_val: Tensor, test_logits: Tensor, y_test: Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lv, lt = _log_mean_probs(val_logits), _log_mean_probs(test_logits)
    c = lt.shape[1]
    ts = TemperatureScaler().fit(lv, y_val)
    m = predictive_metrics(ts(lt).unsqueeze(0).detach(), y_test)
    out.update(ts_temperature=ts.temperature, ts_nll=m["nll"], ts_ece=m["ece"], ts_brier=m["brier"],
               ts_accuracy=m["accuracy"])
    reliability = {"ts": m["reliability"]}
    for key, scaler in (("vs", VectorScaler(c)), ("ms", MatrixScaler(c))):
        scaler.fit(lv, y_val)
        m = predictive_metrics(scaler(lt).unsqueeze(0).detach(), y_test)
        out.update({f"{key}_nll": m["nll"], f"{key}_ece": m["ece"], f"{key}_accuracy": m["accuracy"]})
        reliability[key] = m["reliability"]
    out["reliability_scaled"] = reliability
    return out


def _model_for(cfg: UncertaintyConfig, seed: int, num_train: int) -> tuple[nn.Module, Any, Any]:
    """(model, loss_fn, predict_fn) for the method; the model initialised from ``seed``."""
    torch.manual_seed(seed)
    net = mnist1d_cnn if cfg.model == "cnn" else mnist1d_mlp
    if cfg.method in ("plain", "mc_dropout"):
        return net(dropout=cfg.dropout), F.cross_entropy, None
    if cfg.method == "ensemble":
        seeds = [seed * 1000 + m for m in range(cfg.members)]
        ens = VmapEnsemble(make_members(lambda: net(dropout=cfg.dropout), seeds))
        return ens, ensemble_loss, ensemble_predict_fn()
    if cfg.method == "bayes_by_backprop":
        prior = (GaussianPrior(cfg.bbb_prior_sigma) if cfg.bbb_prior == "gaussian" else ScaleMixturePrior())
        model = to_bayesian(mnist1d_cnn(dropout=0.0), prior=prior, rho_init=cfg.bbb_rho_init,
                            local_reparam=cfg.bbb_local_reparam, copy_model=False)
        return model, ELBOLoss(model, num_train, cfg.bbb_kl_weight), None
    body = spectral_normalize(mnist1d_cnn_body(), bound=cfg.sngp_bound)
    model = nn.Sequential(body, RandomFeatureGP(125, 10, num_features=cfg.sngp_features, seed=seed))
    return model, F.cross_entropy, None


def run_uncertainty(config: UncertaintyConfig, *, seed: int, run_dir: Path | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train ``config.method`` on MNIST-1D (seed ``seed``) and measure accuracy, NLL, ECE, Brier and OOD
    detection against the shifted set; with ``calibrate``, also after temperature / vector / matrix scaling."""
    torch.set_num_threads(config.threads)
    ds = load_dataset(config.dataset).with_validation(config.val_fraction, seed=0)
    shift = load_shift(config.shift)
    assert ds.x_val is not None and ds.y_val is not None
    model, loss_fn, predict_fn = _model_for(config, seed, ds.num_train)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    techniques: list[Technique] = [_ProgressHook(progress)] if progress is not None else []
    trainer = Trainer(model, opt, InMemoryLoader(ds.x_train, ds.y_train, config.batch_size, seed=seed),
                      loss_fn=loss_fn, predict_fn=predict_fn, techniques=techniques,
                      eval_data=(ds.x_val, ds.y_val), eval_every=config.eval_every, max_steps=config.steps,
                      log_every=config.eval_every)
    t0 = time.perf_counter()
    state = trainer.fit()
    extra_seconds = 0.0
    if config.method == "sngp":
        t1 = time.perf_counter()
        fit_covariance(model, ds.x_train)
        extra_seconds = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    test = _sample_logits(config.method, model, ds.x_test, config)
    out_logits = _sample_logits(config.method, model, shift.x_out, config)
    pm = predictive_metrics(test, ds.y_test)
    metrics: dict[str, float] = {k: pm[k] for k in ("accuracy", "nll", "ece", "brier")}
    metrics.update(ood_metrics_of(test, out_logits))
    metrics["train_seconds"] = state.train_seconds + extra_seconds
    extras: dict[str, Any] = {"reliability": pm["reliability"], "config": asdict(config), "seed": seed,
                              "wall_seconds": wall, "samples": int(test.shape[0])}
    if config.method == "ensemble":
        assert isinstance(model, VmapEnsemble)
        members = [predictive_metrics(test[m : m + 1], ds.y_test) for m in range(test.shape[0])]
        extras["members"] = [{k: mm[k] for k in ("accuracy", "nll", "ece", "brier")} for mm in members]
    if config.calibrate:
        val = _sample_logits(config.method, model, ds.x_val, config)
        cal = _calibration(val, ds.y_val, test, ds.y_test)
        extras["reliability_scaled"] = cal.pop("reliability_scaled")
        metrics.update(cal)
    result = ParadigmResult(metrics, list(state.history), extras)
    if run_dir is not None:
        _write_json(Path(run_dir) / "result.json", asdict(result))
    return result


def _label_noise_technique(cfg: LabelNoiseConfig) -> list[Technique]:
    if cfg.technique == "co_teaching":
        tau = cfg.noise_fraction if cfg.forget_rate is None else cfg.forget_rate
        return [CoTeaching(forget_rate=tau, num_gradual=cfg.num_gradual)]
    if cfg.technique == "bootstrap":
        return [BootstrapLoss(beta=cfg.bootstrap_beta, mode=cfg.bootstrap_mode)]
    if cfg.technique == "gce":
        return [GCELoss(q=cfg.gce_q)]
    return []


def run_label_noise(config: LabelNoiseConfig, *, seed: int, run_dir: Path | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train the MNIST-1D paper ConvNet on labels with ``noise_fraction`` flipped (noise seed ``noise_seed``, the
    same for every seed and technique) using ``config.technique``; report clean test accuracy at the end (and the
    best evaluation, for reference), NLL, ECE, and how many flipped training labels the model fitted."""
    torch.set_num_threads(config.threads)
    clean = load_dataset("mnist1d")
    ds, noise = with_noisy_labels(clean, config.noise, config.noise_fraction, seed=config.noise_seed)
    torch.manual_seed(seed)
    model = mnist1d_cnn(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    techniques = _label_noise_technique(config) + ([_ProgressHook(progress)] if progress is not None else [])
    trainer = Trainer(model, opt, InMemoryLoader(ds.x_train, ds.y_train, config.batch_size, seed=seed),
                      techniques=techniques, eval_data=(ds.x_test, ds.y_test), eval_every=config.eval_every,
                      max_steps=config.steps, log_every=config.eval_every)
    state = trainer.fit()
    test = _batched(lambda xb: model.eval()(xb).unsqueeze(0), ds.x_test)
    pm = predictive_metrics(test, ds.y_test)
    with torch.no_grad():
        pred = model.eval()(ds.x_train).argmax(-1)
    flipped = noise.flipped
    evals = [r["eval_accuracy"] for r in state.history if "eval_accuracy" in r]
    metrics = {
        "accuracy": pm["accuracy"], "nll": pm["nll"], "ece": pm["ece"], "brier": pm["brier"],
        "best_accuracy": max(evals) if evals else pm["accuracy"],
        "memorized": float((pred[flipped] == ds.y_train[flipped]).double().mean()) if flipped.any() else 0.0,
        "clean_fit": float((pred[~flipped] == clean.y_train[~flipped]).double().mean()),
        "train_seconds": state.train_seconds,
    }
    extras = {"noise": noise.describe(), "config": asdict(config), "seed": seed}
    result = ParadigmResult(metrics, list(state.history), extras)
    if run_dir is not None:
        _write_json(Path(run_dir) / "result.json", asdict(result))
    return result
