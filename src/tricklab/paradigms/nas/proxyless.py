"""ProxylessNAS (Cai, Zhu & Han, 2019) on the DARTS cell space of :mod:`.darts`: binarized path sampling and a
latency term from a lookup table measured on this CPU.

Binarized paths (Sec. 3.2): on every edge the architecture parameters alpha (edges, N ops) give path
probabilities p = softmax(alpha); each step samples one path per edge and the gates g = one-hot(sampled path)
make the mixed operation  m(x) = sum_j g_j o_j(x) = o_sampled(x)  (one path active). The gradient of the loss with
respect to alpha goes through the gates (eq. 4):
    dL/d alpha_i = sum_j dL/dg_j * dp_j/d alpha_i = sum_j dL/dg_j * p_j (delta_ij - p_i),
with dL/dg_j = <dL/dm, o_j(x)>, which needs every path's output on the architecture step (the tiny cell affords
all N; the paper samples two paths to save memory). Weight steps run the sampled path only.

Latency (Sec. 3.3, eq. 6): with a table F(o) of each operation's measured latency, an edge's expected latency is
E[LAT_e] = sum_j p_ej F(o_j), the cell's E[LAT] = sum_e E[LAT_e]; the architecture loss is
L_CE + lambda * E[LAT] / LAT_ref (LAT_ref: the mean table latency times the number of edges, so lambda has no
unit), and dE[LAT]/d alpha_ei = p_ei (F(o_i) - E[LAT_e]) is exact (no sampling).

Discretization: as for DARTS (:func:`.darts.discretize`: per node, the two strongest incoming edges with their most
probable non-zero operation).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.errors import ConfigError
from tricklab.paradigms.common import write_json
from tricklab.paradigms.nas.darts import OPS, PRIMITIVES, Genotype, SearchNet

__all__ = ["LATENCY_TABLE", "BinaryGate", "ProxylessNet", "binarize", "expected_latency", "genotype_latency",
           "load_latency_table", "measure_latency_table", "proxyless_step"]

# the table measured on this project's CPU (command inside the file); refresh with `python -m
# tricklab.paradigms.nas.proxyless --measure OUT.json`
LATENCY_TABLE = Path(__file__).with_name("latency_table.json")


class BinaryGate(torch.autograd.Function):
    """Gates g = one-hot(index) (edges, N) in the forward pass; in the backward pass the ProxylessNAS estimate
    dL/d alpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) with p = softmax(alpha) (eq. 4)."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, index: Tensor) -> Tensor:
        p = F.softmax(alpha, dim=-1)
        ctx.save_for_backward(p)
        return F.one_hot(index, alpha.shape[-1]).to(alpha.dtype)

    @staticmethod
    def backward(ctx: Any, grad_g: Tensor) -> tuple[Tensor, None]:
        (p,) = ctx.saved_tensors
        gp = grad_g * p  # dL/dg_j p_j
        return gp - p * gp.sum(-1, keepdim=True), None  # sum_j dL/dg_j p_j delta_ij - p_i sum_j dL/dg_j p_j


def binarize(alpha: Tensor, gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample one path per edge from softmax(alpha); returns (gates (E, N) with the eq. 4 gradient, indices (E,))."""
    with torch.no_grad():
        index = torch.multinomial(F.softmax(alpha.detach(), -1), 1, generator=gen).squeeze(-1)
    return BinaryGate.apply(alpha, index), index


def expected_latency(alpha: Tensor, table: dict[str, float], primitives: tuple[str, ...] = PRIMITIVES) -> Tensor:
    """E[LAT] = sum_e sum_j softmax(alpha)_ej F(o_j) (eq. 6 summed over the cell's edges), differentiable."""
    lat = torch.tensor([float(table[p]) for p in primitives], dtype=alpha.dtype)
    return (F.softmax(alpha, -1) * lat).sum()


def genotype_latency(genotype: Genotype, table: dict[str, float]) -> float:
    """The table latency of a discrete cell: the sum of its chosen operations' latencies."""
    return float(sum(table[op] for node in genotype for _, op in node))


class ProxylessNet(SearchNet):
    """The DARTS search network run with binarized gates: ``forward_gated(x, gates)`` computes every path weighted by
    its gate (the architecture step, where dL/dg is needed); ``forward_sampled(x, index)`` runs only the sampled
    path of every edge (the weight step)."""

    def _run(self, x: Tensor, edge_fn: Any) -> Tensor:
        states = [self.stem(x.unsqueeze(1))]
        for j in range(1, self.nodes + 1):
            states.append(sum(edge_fn(e, states[i]) for e, (i, jj) in enumerate(self.edges) if jj == j))
        h = torch.stack(states[1:]).mean(0)
        return self.head(torch.relu(h).flatten(1))

    def forward_gated(self, x: Tensor, gates: Tensor) -> Tensor:
        return self._run(x, lambda e, h: self.mixed[e](h, gates[e]))

    def forward_sampled(self, x: Tensor, index: Tensor) -> Tensor:
        return self._run(x, lambda e, h: self.mixed[e].ops[int(index[e])](h))


def proxyless_step(net: ProxylessNet, w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
                   train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], table: dict[str, float],
                   latency_weight: float, gen: torch.Generator | None = None) -> tuple[float, float, float]:
    """One alternating step: the weights on a training batch through one sampled path per edge, then alpha on a
    validation batch through freshly sampled gates (eq. 4) plus the latency term. Returns (train loss, val loss,
    expected latency)."""
    w_opt.zero_grad(set_to_none=True)
    _, index = binarize(net.alpha, gen)
    lt = F.cross_entropy(net.forward_sampled(train[0], index), train[1])
    lt.backward(inputs=net.weight_parameters())
    w_opt.step()
    a_opt.zero_grad(set_to_none=True)
    gates, _ = binarize(net.alpha, gen)
    lv = F.cross_entropy(net.forward_gated(val[0], gates), val[1])
    lat = expected_latency(net.alpha, table, net.primitives)
    ref = len(net.edges) * sum(table[p] for p in net.primitives) / len(net.primitives)
    (lv + latency_weight * lat / ref).backward(inputs=[net.alpha])
    a_opt.step()
    return float(lt.detach()), float(lv.detach()), float(lat.detach())


def measure_latency_table(channels: int = 16, length: int = 40, batch: int = 1, repeats: int = 200,
                          primitives: tuple[str, ...] = PRIMITIVES, seed: int = 0) -> dict[str, float]:
    """Median forward latency (ms) of each candidate operation on a (batch, channels, length) input, one thread,
    the operations interleaved in a seeded random order every repeat (so drift on a shared machine hits all)."""
    torch.manual_seed(seed)
    ops = {p: OPS[p](channels).eval() for p in primitives}
    x = torch.randn(batch, channels, length)
    times: dict[str, list[float]] = {p: [] for p in primitives}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in primitives:  # warm-up
            for _ in range(20):
                ops[p](x)
        for _ in range(repeats):
            for k in torch.randperm(len(primitives), generator=gen).tolist():
                p = primitives[k]
                t0 = time.perf_counter()
                ops[p](x)
                times[p].append(time.perf_counter() - t0)
    return {p: 1e3 * statistics.median(v) for p, v in times.items()}


def load_latency_table(path: str | Path = LATENCY_TABLE, primitives: tuple[str, ...] = PRIMITIVES
                       ) -> dict[str, float]:
    """The ``latency_ms`` table of a JSON file written by ``--measure``; every primitive must be in it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"latency table {path} not found; measure one with "
                          f"`python -m tricklab.paradigms.nas.proxyless --measure {path}`")
    table = json.loads(path.read_text(encoding="utf-8"))["latency_ms"]
    missing = [p for p in primitives if p not in table]
    if missing:
        raise ConfigError(f"latency table {path} lacks {missing}; measure it again with --measure")
    return {p: float(table[p]) for p in primitives}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure the ProxylessNAS latency lookup table on this CPU.")
    ap.add_argument("--measure", type=Path, required=True, help="output JSON")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--length", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    table = measure_latency_table(a.channels, a.length, repeats=a.repeats)
    cmd = "python -m tricklab.paradigms.nas.proxyless " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(a.measure, {"command": cmd, "latency_ms": table, "channels": a.channels, "length": a.length,
                           "batch": 1, "threads": 1, "repeats": a.repeats, "statistic": "median forward time",
                           "machine": {"cpu": platform.machine(), "torch": torch.__version__,
                                       "shared": "yes: other jobs ran on the same 2 cores"}})
    for p, v in table.items():
        print(f"{p:10s} {v:.4f} ms")


if __name__ == "__main__":
    main()
