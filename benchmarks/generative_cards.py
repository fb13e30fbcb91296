"""Evidence cards for issue 20 (generative models), several seeds each, 1 thread.

Studies (each writes docs/cards/generative-<study>/: a markdown card, its JSON with the top-level "command",
and an SVG):

* ``density``: the logistic VAE (IWAE bound, k = 100) and RealNVP (dequantized bound) on 8-bit Fashion-MNIST,
  test bits per dimension over seeds, with a uniform distribution (8 bits/dim) as the trivial reference. Short
  CPU budgets (stated on the card): the papers' numbers need days of GPU training.
* ``clip``: the CLIP-style image-text model on Fashion-MNIST with code-made captions: zero-shot accuracy by class
  prompts against chance (10%) and against a linear probe on the same frozen image embeddings, recall@1/@5.
* ``gan``: DCGAN-small (non-saturating loss) on Fashion-MNIST, Frechet distance (ours: features of our own small
  CNN classifier) of 2000 samples to 2000 test images, against held-out real images and uniform noise.
* ``estimators``: the variance of REINFORCE (no baseline; leave-one-out baseline) and of the pathwise estimator
  of grad_mu E_{z ~ N(mu, sigma^2)} (z - c)^2 against the number of samples n, measured over independent
  repeats (no training; the seeds are the repeat streams), plotted log-log.

Finished runs are kept under benchmarks/results/generative/ and reused unless ``--fresh``.

    PYTHONPATH=src python benchmarks/generative_cards.py {density,clip,gan,estimators} [--seeds 0 1 2]
        [--vae-steps 3000] [--flow-steps 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch.distributions import Independent, Normal  # noqa: E402

from tricklab.paradigms.generative.clip import CLIPConfig, run_clip  # noqa: E402
from tricklab.paradigms.generative.estimators import pathwise_grads, reinforce_grads  # noqa: E402
from tricklab.paradigms.generative.paradigm import (  # noqa: E402
    GANConfig,
    RealNVPConfig,
    VAEConfig,
    run_gan,
    run_realnvp,
    run_vae,
)
from tricklab.io import atomic_write_text  # noqa: E402
from tricklab.lab.stats import describe  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "generative"
CARDS = ROOT / "docs" / "cards"


def _machine() -> dict[str, Any]:
    return {"cpu": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": 1, "shared": "yes: other helpers' jobs ran on the same 2 cores; timings indicative"}


def _ci(values: list[float], fmt: str = ".3f") -> str:
    d = describe(values)
    if d.ci_low is None:
        return f"{d.mean:{fmt}} (1 seed)"
    return f"{d.mean:{fmt}} [{d.ci_low:{fmt}}, {d.ci_high:{fmt}}]"


def _progress(name: str, seed: int, steps: int) -> Any:
    def show(row: dict[str, Any]) -> None:
        print(f"  {name} seed {seed}: step {row['step']}/{steps} loss {row.get('train_loss', float('nan')):.4f} "
              f"({row['seconds']:.0f}s)", flush=True)
    return show


def _run_density(seeds: list[int], vae_steps: int, flow_steps: int, fresh: bool) -> dict[str, dict[int, Any]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    configs = {"vae_logistic": VAEConfig(steps=vae_steps, log_every=min(250, vae_steps)),
               "realnvp": RealNVPConfig(steps=flow_steps, batch_size=32, hidden=16, blocks=2,
                                        log_every=min(100, flow_steps))}
    out: dict[str, dict[int, Any]] = {k: {} for k in configs}
    for seed in seeds:
        for name, cfg in configs.items():
            path = RESULTS / f"{name}-seed{seed}.json"
            if path.exists() and not fresh and json.loads(path.read_text())["extras"]["config"] == asdict(cfg):
                out[name][seed] = json.loads(path.read_text())
                continue
            t0 = time.perf_counter()
            fn = run_vae if name.startswith("vae") else run_realnvp
            res = fn(cfg, seed=seed, progress=_progress(name, seed, cfg.steps))  # type: ignore[arg-type]
            data = asdict(res)
            data["extras"]["wall_seconds"] = time.perf_counter() - t0
            atomic_write_text(path, json.dumps(data))
            out[name][seed] = data
            print(f"{name} seed {seed}: {res.metrics}", flush=True)
    return out


def _grid_svg(ax: Any, grids: list[list[list[float]]], title: str) -> None:
    import numpy as np

    imgs = np.array(grids[:16]).reshape(4, 4, 28, 28).transpose(0, 2, 1, 3).reshape(112, 112)
    ax.imshow(imgs, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _density_card(results: dict[str, dict[int, Any]], command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = CARDS / "generative-density"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = sorted(results["vae_logistic"])
    vae = {k: [results["vae_logistic"][s]["metrics"][k] for s in seeds] for k in
           ("test_bpd", "test_elbo_bpd", "test_kl", "train_seconds")}
    nvp = {k: [results["realnvp"][s]["metrics"][k] for s in seeds] for k in ("test_bpd", "train_bpd",
                                                                            "train_seconds")}
    vcfg = results["vae_logistic"][seeds[0]]["extras"]["config"]
    fcfg = results["realnvp"][seeds[0]]["extras"]["config"]
    rows = [("VAE, logistic decoder: IWAE bound (k = %d)" % vcfg["iwae_k"], vae["test_bpd"]),
            ("VAE, logistic decoder: ELBO", vae["test_elbo_bpd"]),
            ("RealNVP: dequantized bound", nvp["test_bpd"]),
            ("uniform over 256 levels (reference)", [8.0] * len(seeds))]
    summary = {"command": command, "study": "density", "seeds": seeds, "machine": _machine(),
               "data": "Fashion-MNIST, 60000 training images, first %d test images, 8-bit" % vcfg["test_examples"],
               "vae": {"config": vcfg, "metrics": {k: describe(v).__dict__ for k, v in vae.items()},
                       "per_seed": vae},
               "realnvp": {"config": fcfg, "metrics": {k: describe(v).__dict__ for k, v in nvp.items()},
                           "per_seed": nvp}}
    atomic_write_text(folder / "density.json", json.dumps(summary, indent=1))
    lines = [
        "# Generative card: VAE and RealNVP bits per dimension on Fashion-MNIST", "",
        f"Command: `{command}`", "",
        "## Setting", "",
        f"- **data**: Fashion-MNIST, all 60000 training images, the first {vcfg['test_examples']} test images; "
        "8-bit pixels (256 levels), 784 dimensions",
        f"- **VAE**: MLP 784-{vcfg['hidden']}-{vcfg['hidden']}-2x{vcfg['latent_dim']} and back, discretized "
        f"logistic decoder (per-pixel learned scale), Adam lr {vcfg['lr']}, batch {vcfg['batch_size']}, "
        f"{vcfg['steps']} steps; test metric the IWAE bound with k = {vcfg['iwae_k']} (Burda et al. 2016)",
        f"- **RealNVP**: logit preprocessing (alpha {fcfg['alpha']}), {fcfg['blocks']} checkerboard + "
        f"{fcfg['blocks']} channel (after a squeeze) + {fcfg['blocks']} checkerboard affine couplings, "
        f"s/t conv nets with {fcfg['hidden']} channels, no batch norm; Adam lr {fcfg['lr']}, batch "
        f"{fcfg['batch_size']}, {fcfg['steps']} steps; test metric the dequantization bound averaged over "
        f"{fcfg['dequant_samples']} uniform dequantizations per image",
        f"- **seeds**: {seeds} (initialisation, batch order, sampling noise); 1 thread",
        f"- **machine**: {json.dumps(_machine())}", "",
        "## Results (test bits/dim, lower is better; mean [95% t-interval over seeds])", "",
        "| model | bits/dim |", "|---|---|"]
    lines += [f"| {name} | {_ci(v)} |" for name, v in rows]
    lines += ["", f"Training time per run (s, shared machine): VAE {_ci(vae['train_seconds'], '.0f')}, "
              f"RealNVP {_ci(nvp['train_seconds'], '.0f')}. RealNVP training bits/dim (last log interval): "
              f"{_ci(nvp['train_bpd'])}. VAE test KL (nats/image): {_ci(vae['test_kl'], '.1f')}.", "",
              "## Reading", "",
              "These are short CPU budgets (minutes), not the papers' settings: both models are far from "
              "converged, and the numbers say how far each gets at this budget, not what the method can reach. "
              "The IWAE bound is tighter than the ELBO by construction (same model, k = 100 vs 1). Both numbers "
              "are bits per dimension of the same discrete 8-bit data: the VAE's is a bound on a discrete "
              "likelihood, RealNVP's a bound through uniform dequantization, so they compare like with like.",
              "", "![samples](density.svg)", ""]
    atomic_write_text(folder / "density.md", "\n".join(lines))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    names = ["VAE IWAE", "VAE ELBO", "RealNVP"]
    for i, v in enumerate([vae["test_bpd"], vae["test_elbo_bpd"], nvp["test_bpd"]]):
        axes[0].scatter([i] * len(v), v, color="C%d" % i)
    axes[0].axhline(8.0, color="gray", ls="--", lw=1, label="uniform")
    axes[0].set_xticks(range(3), names, fontsize=8)
    axes[0].set_ylabel("test bits/dim (per seed)")
    axes[0].legend(fontsize=8)
    _grid_svg(axes[1], results["vae_logistic"][seeds[0]]["extras"]["samples"], "VAE samples (decoded means)")
    _grid_svg(axes[2], results["realnvp"][seeds[0]]["extras"]["samples"], "RealNVP samples")
    fig.tight_layout()
    fig.savefig(folder / "density.svg")
    plt.close(fig)


def _estimators(seeds: list[int], repeats: int = 300) -> dict[str, Any]:
    """Variance of the n-sample estimate of d/dmu E (z - c)^2 over ``repeats`` independent repeats per seed."""
    mu, log_sigma, c = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64), 3.0

    def make(m: torch.Tensor, ls: torch.Tensor) -> Independent:
        return Independent(Normal(m, ls.exp()), 1)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z - c).pow(2).sum(-1)

    ns = [2, 4, 8, 16, 32, 64, 128, 256, 512]
    est = {"reinforce": lambda n: reinforce_grads(f, [mu, log_sigma], make, n),
           "reinforce_loo": lambda n: reinforce_grads(f, [mu, log_sigma], make, n, baseline="loo"),
           "pathwise": lambda n: pathwise_grads(f, [mu, log_sigma], make, n)}
    out: dict[str, Any] = {"exact_grad_mu": 2 * (0.5 - c), "ns": ns, "repeats": repeats, "per_seed": {}}
    for seed in seeds:
        torch.manual_seed(seed)
        per: dict[str, dict[str, list[float]]] = {}
        for name, fn in est.items():
            var, bias = [], []
            for n in ns:
                means = torch.stack([fn(n)[:, 0].mean() for _ in range(repeats)])
                var.append(float(means.var()))
                bias.append(float(means.mean() - out["exact_grad_mu"]))
            per[name] = {"variance": var, "mean_minus_exact": bias}
        out["per_seed"][seed] = per
    return out


def _estimators_card(res: dict[str, Any], command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = CARDS / "generative-estimators"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = sorted(res["per_seed"])
    ns = res["ns"]
    names = {"reinforce": "REINFORCE, no baseline", "reinforce_loo": "REINFORCE, leave-one-out baseline",
             "pathwise": "pathwise (reparameterization)"}
    # the exact variance of one sample's estimate: score (z - mu) / sigma^2 times f, and 2 (z - c) for the path
    exact_single = {"pathwise": 4.0}  # Var[2 (z - c)] = 4 sigma^2 with sigma = 1
    table = ["| n | " + " | ".join(names.values()) + " |", "|---|" + "---|" * len(names)]
    for j, n in enumerate(ns):
        cells = [_ci([res["per_seed"][s][k]["variance"][j] for s in seeds], ".4g") for k in names]
        table.append(f"| {n} | " + " | ".join(cells) + " |")
    bias_rows = []
    for k in names:
        b = [res["per_seed"][s][k]["mean_minus_exact"][-1] for s in seeds]
        bias_rows.append(f"| {names[k]} | {_ci(b, '.4f')} |")
    res = dict(res)
    res.update({"command": command, "machine": _machine(), "seeds": seeds, "exact_single_sample_variance":
                exact_single})
    atomic_write_text(folder / "estimators.json", json.dumps(res, indent=1))
    lines = ["# Generative card: variance of REINFORCE and pathwise gradient estimators", "",
             f"Command: `{command}`", "",
             "## Setting", "",
             "- **objective**: E_{z ~ N(mu, sigma^2)} (z - c)^2 with mu = 0.5, sigma = 1, c = 3; exact "
             f"d/dmu = 2 (mu - c) = {res['exact_grad_mu']}",
             f"- **estimate**: the mean of n per-sample gradient rows (tricklab.paradigms.generative.estimators); its "
             f"variance over {res['repeats']} independent repeats, for each n; seeds {seeds} are independent "
             "repeat streams (no training)",
             f"- **machine**: {json.dumps(_machine())}", "",
             "## Variance of the n-sample estimate of d/dmu (mean [95% t-interval over seeds])", "", *table, "",
             "## Mean minus exact gradient at the largest n (unbiasedness; should straddle 0)", "",
             "| estimator | mean - exact |", "|---|---|", *bias_rows, "",
             "## Reading", "",
             "All three fall as 1/n (independent samples; the leave-one-out baseline makes the rows "
             "dependent but the mean keeps the 1/n rate). The baseline removes f's large offset (c is far "
             "from mu), and the pathwise estimator uses f's derivative, so it has the lowest variance here "
             "(exact single-sample variance 4 sigma^2 = 4). This ordering is a property of this smooth "
             "objective; for non-differentiable f only REINFORCE applies.", "",
             "![variance](estimators.svg)", ""]
    atomic_write_text(folder / "estimators.md", "\n".join(lines))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, label in names.items():
        mean = [sum(res["per_seed"][s][k]["variance"][j] for s in seeds) / len(seeds) for j in range(len(ns))]
        ax.loglog(ns, mean, marker="o", label=label)
    ax.loglog(ns, [4.0 / n for n in ns], color="gray", ls="--", lw=1, label="4 / n (pathwise, exact)")
    ax.set_xlabel("samples n")
    ax.set_ylabel("variance of the estimate of d/dmu")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "estimators.svg")
    plt.close(fig)


def _clip(seeds: list[int], steps: int) -> tuple[dict[int, Any], CLIPConfig]:
    cfg = CLIPConfig(steps=steps)
    out: dict[int, Any] = {}
    for seed in seeds:
        res = run_clip(cfg, seed=seed, progress=_progress("clip", seed, steps))
        out[seed] = asdict(res)
        print(f"clip seed {seed}: {res.metrics}", flush=True)
    return out, cfg


def _clip_card(results: dict[int, Any], cfg: CLIPConfig, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = CARDS / "generative-clip"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = sorted(results)
    keys = ["zero_shot_accuracy", "linear_probe_accuracy", "recall_at_1", "recall_at_5", "train_seconds"]
    vals = {k: [results[s]["metrics"][k] for s in seeds] for k in keys}
    summary = {"command": command, "study": "clip", "seeds": seeds, "config": asdict(cfg), "machine": _machine(),
               "metrics": {k: describe(v).__dict__ for k, v in vals.items()}, "per_seed": vals,
               "example_captions": results[seeds[0]]["extras"]["example_captions"],
               "distinct_captions": results[seeds[0]]["extras"]["distinct_captions"]}
    atomic_write_text(folder / "clip.json", json.dumps(summary, indent=1))
    label = {"zero_shot_accuracy": "zero-shot accuracy (prompts 'a photo of a {class}')",
             "linear_probe_accuracy": "linear probe accuracy (same frozen image embeddings)",
             "recall_at_1": "image -> caption recall@1", "recall_at_5": "image -> caption recall@5",
             "train_seconds": "training seconds (shared machine)"}
    lines = ["# Generative card: CLIP-style image-text model on Fashion-MNIST", "", f"Command: `{command}`", "",
             "## Setting", "",
             "- **data**: Fashion-MNIST training images, each paired per step with a caption made by code from its "
             "class name and two attribute words of its own pixels (brightness and size terciles), in one of "
             "three templates; e.g. " + "; ".join(f"'{c}'" for c in summary["example_captions"][:3]),
             f"- **model**: image MLP 784-{cfg.hidden}-{cfg.dim}, text mean-of-word-embeddings -{cfg.hidden}-"
             f"{cfg.dim}, learned logit scale (init 1/0.07, cap 100); symmetric InfoNCE; Adam lr {cfg.lr}, "
             f"batch {cfg.batch_size}, {cfg.steps} steps",
             f"- **evaluation**: first {cfg.eval_examples} test images; zero-shot by cosine to the 10 class "
             f"prompts; recall@k against the {summary['distinct_captions']} distinct canonical captions of those "
             f"images; linear probe: logistic regression on {cfg.probe_examples} training images' embeddings",
             f"- **seeds**: {seeds}; 1 thread; **machine**: {json.dumps(_machine())}", "",
             "## Results (mean [95% t-interval over seeds])", "", "| metric | value |", "|---|---|",
             "| chance (10 classes) | 0.100 |"]
    lines += [f"| {label[k]} | {_ci(vals[k])} |" for k in keys]
    lines += ["", "## Reading", "",
              "The text side only ever sees the class name and two coarse attributes, so zero-shot accuracy is "
              "bounded by how well the image embedding separates classes; the linear probe on the same "
              "embedding is the supervised reference. Captions are synthetic: this measures the contrastive "
              "machinery, not language understanding.", "", "![accuracy](clip.svg)", ""]
    atomic_write_text(folder / "clip.md", "\n".join(lines))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, k in enumerate(keys[:4]):
        ax.scatter([i] * len(seeds), vals[k], color=f"C{i}")
    ax.axhline(0.1, color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks(range(4), ["zero-shot", "linear probe", "R@1", "R@5"])
    ax.set_ylabel("per seed")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "clip.svg")
    plt.close(fig)


GAN_VARIANTS = {"dcgan": False, "dcgan-sn": True}  # name -> spectral normalization of the discriminator


def _gan(seeds: list[int], steps: int) -> tuple[dict[str, dict[int, Any]], GANConfig]:
    """Both variants on the same seeds: the plain DCGAN and the spectral-norm discriminator (the stabilized
    variant), everything else equal."""
    cfg = GANConfig(steps=steps, classifier_steps=300)
    out: dict[str, dict[int, Any]] = {}
    for variant, spectral in GAN_VARIANTS.items():
        vcfg = dataclasses.replace(cfg, spectral=spectral)
        out[variant] = {}
        for seed in seeds:
            def show(row: dict[str, Any], seed: int = seed, variant: str = variant) -> None:
                print(f"  {variant} seed {seed}: step {row['step']}/{steps} d {row['d_loss']:.3f} "
                      f"g {row['g_loss']:.3f} ({row['seconds']:.0f}s)", flush=True)
            res = run_gan(vcfg, seed=seed, progress=show)
            out[variant][seed] = asdict(res)
            print(f"{variant} seed {seed}: {res.metrics}", flush=True)
    return out, cfg


GAN_KEYS = ["frechet_distance", "precision", "recall", "frechet_real_reference", "precision_real_reference",
            "recall_real_reference", "frechet_noise_reference", "classifier_accuracy", "train_seconds"]
GAN_LABELS = {"frechet_distance": "Frechet distance (ours), samples vs test (lower is better)",
              "precision": "improved precision, k=3 (higher: samples look real)",
              "recall": "improved recall, k=3 (higher: samples cover the test images)",
              "frechet_real_reference": "reference: held-out real images, Frechet distance",
              "precision_real_reference": "reference: held-out real images, precision",
              "recall_real_reference": "reference: held-out real images, recall",
              "frechet_noise_reference": "reference: uniform noise, Frechet distance",
              "classifier_accuracy": "feature classifier accuracy (test images used)",
              "train_seconds": "GAN training seconds (shared machine)"}


def _gan_card(results: dict[str, dict[int, Any]], cfg: GANConfig, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = CARDS / "generative-gan"
    folder.mkdir(parents=True, exist_ok=True)
    variants = list(results)
    seeds = sorted(results[variants[0]])
    vals = {v: {k: [results[v][s]["metrics"][k] for s in seeds] for k in GAN_KEYS} for v in variants}
    # Paired (same seed) differences of the spectral-norm variant against the plain DCGAN.
    diffs = {k: [b - a for a, b in zip(vals["dcgan"][k], vals["dcgan-sn"][k])] for k in GAN_KEYS[:3]}
    summary = {"command": command, "study": "gan", "seeds": seeds, "config": asdict(cfg), "machine": _machine(),
               "metrics": {v: {k: describe(x).__dict__ for k, x in vals[v].items()} for v in variants},
               "per_seed": vals, "paired_sn_minus_plain": {k: describe(x).__dict__ for k, x in diffs.items()}}
    atomic_write_text(folder / "gan.json", json.dumps(summary, indent=1))
    lines = ["# Generative card: DCGAN-small on Fashion-MNIST, Frechet distance and precision/recall (ours)", "",
             f"Command: `{command}`", "", "## Setting", "",
             f"- **GAN**: DCGAN-small (G: linear to {2 * cfg.width}x7x7, two transposed convs, batch norm; D: two "
             f"strided convs, LeakyReLU 0.2), non-saturating loss, Adam lr {cfg.lr}, beta1 0.5, batch "
             f"{cfg.batch_size}, {cfg.steps} steps, latent {cfg.latent_dim}; **dcgan-sn** is the same with "
             "spectral normalization on every discriminator layer (Miyato et al., 2018; no batch norm in D then)",
             f"- **metrics**: in the 64 pooled features of our own CNN classifier (tricklab.models.cnn2d, "
             f"{cfg.classifier_steps} Adam steps, seed {cfg.classifier_seed}, the same network for every run) of "
             f"{cfg.eval_examples} images against the first {cfg.eval_examples} test images: the Frechet distance "
             "between fitted Gaussians (not FID: not Inception features) and the improved precision/recall of "
             "Kynkaenniemi et al. (2019) with k = 3. Compare only within this card",
             f"- **seeds**: {seeds} (paired across variants); 1 thread; **machine**: {json.dumps(_machine())}", "",
             "## Results (mean [95% t-interval] over seeds)", "",
             "| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    lines += [f"| {GAN_LABELS[k]} | " + " | ".join(_ci(vals[v][k]) for v in variants) + " |" for k in GAN_KEYS]
    lines += ["", "Paired difference dcgan-sn minus dcgan (same seed):", "", "| metric | difference |", "|---|---|"]
    lines += [f"| {k} | {_ci(diffs[k])} |" for k in diffs]
    lines += ["", "![samples](gan.svg)", ""]
    atomic_write_text(folder / "gan.md", "\n".join(lines))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, v in enumerate(variants):
        axes[0].scatter(vals[v]["recall"], vals[v]["precision"], color=f"C{i}", label=v)
    axes[0].scatter(vals["dcgan"]["recall_real_reference"], vals["dcgan"]["precision_real_reference"],
                    color="k", marker="x", label="held-out real")
    axes[0].set_xlabel("recall (k=3)")
    axes[0].set_ylabel("precision (k=3)")
    axes[0].legend(fontsize=8)
    for j, v in enumerate(variants):
        _grid_svg(axes[1 + j], results[v][seeds[0]]["extras"]["samples"], f"{v} samples, seed {seeds[0]}")
    fig.tight_layout()
    fig.savefig(folder / "gan.svg")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", choices=["density", "clip", "gan", "estimators"])
    p.add_argument("--gan-steps", type=int, default=1000)
    p.add_argument("--clip-steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--flow-steps", type=int, default=1000)
    p.add_argument("--fresh", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "PYTHONPATH=src python benchmarks/generative_cards.py " + a.study + " --seeds " + \
        " ".join(map(str, a.seeds))
    if a.study == "density":
        command += f" --vae-steps {a.vae_steps} --flow-steps {a.flow_steps}"
        _density_card(_run_density(a.seeds, a.vae_steps, a.flow_steps, a.fresh), command)
    elif a.study == "clip":
        command += f" --clip-steps {a.clip_steps}"
        _clip_card(*_clip(a.seeds, a.clip_steps), command)
    elif a.study == "gan":
        command += f" --gan-steps {a.gan_steps}"
        _gan_card(*_gan(a.seeds, a.gan_steps), command)
    else:
        _estimators_card(_estimators(a.seeds), command)
    print("wrote docs/cards/generative-" + a.study)


if __name__ == "__main__":
    main()
