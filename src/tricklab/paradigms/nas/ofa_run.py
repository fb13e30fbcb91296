"""``run_ofa``: once-for-all training of the 1-D supernet on MNIST-1D by progressive shrinking, then sub-network
selection under a latency budget measured on this CPU, without retraining (shaped for the lab's task kinds).

Phases of ``steps_per_phase`` Adam steps each: full network; elastic kernel; + elastic depth; + elastic width
(channels sorted by importance first); the last three distil from the full network after phase one. Then
``candidates`` random sub-networks (plus the full and the smallest) are measured: accuracy on a held-out 10% of
the training set, and latency as the median of ``latency_repeats`` forward passes of a batch of 64 on one thread
(all candidates interleaved round-robin in every repeat). The selected sub-network is the most accurate on the
held-out part among those within ``latency_budget`` x the full network's latency; its test accuracy is reported.
Latencies are measured on a shared machine, so they carry no verdict, and the choice can change between runs of one
seed; with ``latency_model="macs"`` the multiply-accumulate count replaces the measured latency and the selection
is deterministic for a seed.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.evaluate.declared import MetricSpec
from tricklab.paradigms.common import ParadigmResult, Progress, accuracy, check, mnist1d_arrays, pos_int, pos_num, \
    write_json
from tricklab.paradigms.nas.ofa import OFANet, SubnetConfig, sample_subnet, sort_channels, subnet_macs

__all__ = ["OFA_METRICS", "OfaConfig", "run_ofa"]

OFA_METRICS: list[MetricSpec] = [
    MetricSpec("full_accuracy", "test accuracy of the full network", True),
    MetricSpec("selected_accuracy", "test accuracy of the sub-network chosen under the latency budget", True),
    MetricSpec("smallest_accuracy", "test accuracy of the smallest sub-network (no retraining)", True),
    MetricSpec("selected_latency_ratio", "latency of the chosen sub-network / full", False, verdict=False,
               fmt=".3f"),
    MetricSpec("train_seconds", "supernet training time", False, unit="s", verdict=False, fmt=".1f"),
]

PHASES: tuple[tuple[str, bool, bool, bool], ...] = (
    ("full", False, False, False), ("kernel", True, False, False), ("depth", True, True, False),
    ("width", True, True, True))


@dataclass
class OfaConfig:
    """Once-for-all on MNIST-1D: 16 channels, up to 3 residual blocks, kernels 3/5/7, inner widths 8/16/32."""

    channels: int = 16
    max_depth: int = 3
    steps_per_phase: int = 500
    batch_size: int = 64
    lr: float = 3e-3
    distill_weight: float = 1.0
    candidates: int = 30
    latency_budget: float = 0.5
    latency_repeats: int = 15
    latency_model: str = "measured"
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("channels", "max_depth", "steps_per_phase", "batch_size", "candidates", "latency_repeats",
                     "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(pos_num(self.lr), "lr", "a positive number", self.lr)
        check(self.latency_model in ("measured", "macs"), "latency_model",
              "'measured' (this CPU, noisy when shared) or 'macs' (multiply-accumulates, deterministic)",
              self.latency_model)
        check(isinstance(self.distill_weight, (int, float)) and self.distill_weight >= 0, "distill_weight", ">= 0",
              self.distill_weight)
        check(isinstance(self.latency_budget, (int, float)) and 0 < self.latency_budget <= 1, "latency_budget",
              "in (0, 1] (a fraction of the full network's latency)", self.latency_budget)


@torch.no_grad()
def _latencies(net: OFANet, subnets: list[SubnetConfig], x: torch.Tensor, repeats: int) -> list[float]:
    """Median forward time of each sub-network; the candidates are interleaved round-robin in every repeat so
    that load from other processes spreads over all of them instead of biasing one."""
    for s in subnets:
        net(x, s)  # warm-up
    times: list[list[float]] = [[] for _ in subnets]
    for _ in range(repeats):
        for i, s in enumerate(subnets):
            t = time.perf_counter()
            net(x, s)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def run_ofa(config: OfaConfig, *, seed: int, run_dir: Path | None = None,
            progress: Progress | None = None) -> ParadigmResult:
    """Train the supernet by progressive shrinking (seed ``seed``) and pick a sub-network under the budget."""
    torch.set_num_threads(config.threads)
    x, y, xt, yt = mnist1d_arrays()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    va, tr = perm[: len(x) // 10], perm[len(x) // 10 :]
    torch.manual_seed(seed)
    net = OFANet(config.channels, config.max_depth)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    teacher: OFANet | None = None
    history: list[dict[str, Any]] = []
    t0, step = time.perf_counter(), 0
    for phase, kernel, depth, width in PHASES:
        if phase == "width":
            sort_channels(net)
        for _ in range(config.steps_per_phase):
            idx = tr[torch.randint(0, len(tr), (config.batch_size,), generator=gen)]
            sub = sample_subnet(net, gen, kernel, depth, width) if phase != "full" else None
            logits = net(x[idx], sub)
            loss = F.cross_entropy(logits, y[idx])
            if teacher is not None and config.distill_weight > 0:
                with torch.no_grad():
                    soft = F.softmax(teacher(x[idx]), -1)
                loss = loss + config.distill_weight * F.kl_div(F.log_softmax(logits, -1), soft, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if phase == "full":
            teacher = copy.deepcopy(net).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        with torch.no_grad():
            row = {"step": step, "seconds": time.perf_counter() - t0, "phase": phase,
                   "eval_accuracy": accuracy(net(x[va]), y[va])}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    train_seconds = time.perf_counter() - t0
    net.eval()
    full = net.full()
    n = config.max_depth
    smallest = SubnetConfig(1, (net.kernels[0],) * n, (net.widths[0],) * n)
    cands = [full, smallest] + [sample_subnet(net, gen) for _ in range(config.candidates)]
    xb = xt[:64]
    if config.latency_model == "measured":
        lat = _latencies(net, cands, xb, config.latency_repeats)
    else:
        lat = [float(subnet_macs(net, s)) for s in cands]
    front = []
    with torch.no_grad():
        for s, seconds in zip(cands, lat):
            front.append({"subnet": asdict(s), "latency": seconds, "val_accuracy": accuracy(net(x[va], s), y[va]),
                          "test_accuracy": accuracy(net(xt, s), yt)})
    full_lat = front[0]["latency"]
    within = [f for f in front if f["latency"] <= config.latency_budget * full_lat] or [min(front, key=lambda f:
                                                                                               f["latency"])]
    chosen = max(within, key=lambda f: f["val_accuracy"])
    metrics = {"full_accuracy": front[0]["test_accuracy"], "selected_accuracy": chosen["test_accuracy"],
               "smallest_accuracy": front[1]["test_accuracy"],
               "selected_latency_ratio": chosen["latency"] / full_lat, "train_seconds": train_seconds}
    extras = {"config": asdict(config), "seed": seed, "front": front, "selected": chosen["subnet"]}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
