"""Full-batch training-epoch time of tricklab's GCN and GAT against torch_geometric's GCNConv / GATConv models of
the same sizes, on a Planetoid set with ~3,700 sparse features and on Cora.

Data (both read by the Planetoid reader from ``ind.<name>.*`` files, as ``tricklab run`` reads them):

* ``citeseer-like``: a code-made graph with CiteSeer's shape (3,327 nodes, 3,703 binary word features at
  CiteSeer's density, 31.6 words per node, 4,552 undirected edges, 6 classes, 120/500/1000 split), written by
  ``tricklab.data.datasets.planetoid.write_planetoid_like(seed=0)`` into a temporary folder (the real CiteSeer
  files are not available offline; docs/data-graphs.md describes the generator);
* ``cora``: the real Cora files (shared/data/planetoid), when present.

One epoch = ``zero_grad``, forward on the whole graph, cross-entropy on the training nodes, backward, Adam step,
in train mode (dropout on). Ours runs the CLI's code path: ``load_dataset`` (row-normalised, sparse features),
``FullBatchGraphLoader`` targets (-100 outside the train mask), ``build_model`` (``gcn``: Kipf & Welling's
2-layer GCN, hidden 16, dropout 0.5, cached normalisation; ``gat``: 8 heads x 8 hidden, ELU, 1 output head,
dropout 0.6 on inputs and attention) and ``create_optimizer("adam", model, lr, weight_decay=5e-4)``.
Theirs: the same architecture from ``torch_geometric.nn.GCNConv(cached=True)`` / ``GATConv`` on the dense
row-normalised features (torch_geometric's ``Planetoid`` + ``NormalizeFeatures`` gives dense features), with
``F.dropout`` on the input, starting from the same weights (copied; outputs compared in eval mode before timing).

Rows: ``gcn`` and ``gat`` (ours with sparse features, the default), ``gcn dense`` / ``gat dense`` (ours with
``sparse_features=False``: the dense path kept for dense features), ``gat paper`` (our ``protocol="paper"``:
per-head input dropout and dropout on the projected features, more work than theirs, shown for its cost).

Per case three contenders: ours, a second identical copy of ours ("again") and theirs. After ``--warmup``
epochs each, ``--rounds`` rounds of ``--epochs`` epochs; in every epoch slot the three run one epoch each in a
rotating order, so machine load hits all alike. ``ratio`` = median over rounds of ours/theirs (summed epoch
times of the round), ``noise`` = median over rounds of ours/again; verdicts as in optimizer_step.py (``<= 1``,
``within noise`` when above 1 by less than the 90th percentile of |again - 1| over all cases, else ``slower``).

    python benchmarks/gnn_epoch.py [--rounds 7] [--epochs 10] [--warmup 3] [--threads 1] [--only gcn,gat]

Writes ``benchmarks/results/gnn_epoch.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data import load_dataset
from tricklab.data.datasets.planetoid import default_dirs, write_planetoid_like
from tricklab.data.graph_loaders import FullBatchGraphLoader
from tricklab.models import build_model
from tricklab.optim import create_optimizer

RESULTS = Path(__file__).resolve().parent / "results" / "gnn_epoch.json"
LR = {"gcn": 0.01, "gat": 0.005}


class PygGCN(nn.Module):
    def __init__(self, f: int, c: int) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1, self.conv2 = GCNConv(f, 16, cached=True), GCNConv(16, c, cached=True)

    def forward(self, x: Tensor, ei: Tensor) -> Tensor:
        x = F.dropout(x, 0.5, self.training)
        x = F.relu(self.conv1(x, ei))
        x = F.dropout(x, 0.5, self.training)
        return self.conv2(x, ei)


class PygGAT(nn.Module):
    def __init__(self, f: int, c: int) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        self.conv1 = GATConv(f, 8, heads=8, dropout=0.6)
        self.conv2 = GATConv(64, c, heads=1, concat=False, dropout=0.6)

    def forward(self, x: Tensor, ei: Tensor) -> Tensor:
        x = F.dropout(x, 0.6, self.training)
        x = F.elu(self.conv1(x, ei))
        x = F.dropout(x, 0.6, self.training)
        return self.conv2(x, ei)


def copy_weights(ours: nn.Module, theirs: nn.Module) -> None:
    with torch.no_grad():
        for a, b in [(ours.conv1, theirs.conv1), (ours.conv2, theirs.conv2)]:
            b.lin.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
            if hasattr(b, "att_src"):
                b.att_src.copy_(a.att_src.view_as(b.att_src))
                b.att_dst.copy_(a.att_dst.view_as(b.att_dst))


def ours_epoch(name: str, graph: Any, targets: Tensor, **kw: Any) -> tuple[nn.Module, Callable[[], None]]:
    model = build_model(name, (graph.x.shape[1],), int(graph.y.max()) + 1, **kw)
    opt = create_optimizer("adam", model, lr=LR[name], weight_decay=5e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(graph), targets).backward()
        opt.step()

    return model, step


def theirs_epoch(model: nn.Module, x: Tensor, ei: Tensor, targets: Tensor, lr: float) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, ei), targets).backward()
        opt.step()

    return step


def data_sets(tmp: Path) -> dict[str, tuple[Any, Any, str]]:
    """name -> (sparse graph, dense graph, description), both read through the Planetoid loader."""
    out = {}
    write_planetoid_like(tmp, "citeseer-like", seed=0)
    sets = [("citeseer-like", str(tmp))]
    cora_dir = next((d for d in default_dirs() if (d / "ind.cora.x").is_file()), None)
    if cora_dir is not None:
        sets.append(("cora", str(cora_dir)))
    for name, folder in sets:
        ds = load_dataset("planetoid", data_dir=folder, dataset=name)
        dense = load_dataset("planetoid", data_dir=folder, dataset=name, sparse_features=False)
        g = ds.graph
        desc = (f"{name}: {g.num_nodes} nodes, {g.x.shape[1]} features ({g.x._nnz()} non-zeros, "
                f"{100 * g.x._nnz() / (g.num_nodes * g.x.shape[1]):.2f}%), {g.num_edges} directed edges, "
                f"{ds.num_classes} classes" + (" (code-made, CiteSeer's shape)" if name != "cora" else " (real)"))
        out[name] = (g, dense.graph, desc)
    return out


def build_cases(sets: dict[str, tuple[Any, Any, str]], only: set[str] | None) -> list[tuple[str, list]]:
    cases = []
    for dname, (g, gd, _) in sets.items():
        targets = FullBatchGraphLoader(g, "train").targets
        f, c = g.x.shape[1], int(g.y.max()) + 1
        specs = [("gcn", "gcn", g, {}), ("gat", "gat", g, {}), ("gcn dense", "gcn", gd, {}),
                 ("gat dense", "gat", gd, {}), ("gat paper", "gat", g, {"protocol": "paper"})]
        for label, model_name, graph, kw in specs:
            if only and label not in only:
                continue
            torch.manual_seed(0)
            ours, step_a = ours_epoch(model_name, graph, targets, **kw)
            again = copy.deepcopy(ours)
            opt_b = create_optimizer("adam", again, lr=LR[model_name], weight_decay=5e-4)
            again.train()

            def step_b(m: nn.Module = again, o: torch.optim.Optimizer = opt_b, gr: Any = graph,
                       t: Tensor = targets) -> None:
                o.zero_grad(set_to_none=True)
                F.cross_entropy(m(gr), t).backward()
                o.step()

            theirs = PygGCN(f, c) if model_name == "gcn" else PygGAT(f, c)
            if kw.get("protocol") != "paper":
                copy_weights(ours, theirs)
                ours.eval(), theirs.eval()
                with torch.no_grad():
                    diff = (ours(graph) - theirs(gd.x, gd.edge_index)).abs().max().item()
                assert diff < 1e-4, f"{label}: models disagree before timing ({diff})"
                ours.train()
            step_c = theirs_epoch(theirs, gd.x, gd.edge_index, targets, LR[model_name])
            cases.append((f"{dname} {label}", [("ours", step_a), ("again", step_b), ("theirs", step_c)]))
    return cases


def time_case(contenders: list, args: argparse.Namespace) -> dict[str, Any]:
    for _, step in contenders:
        for _ in range(args.warmup):
            step()
    sums: dict[str, list[float]] = {who: [] for who, _ in contenders}
    slot = 0
    for _ in range(args.rounds):
        acc = {who: 0.0 for who, _ in contenders}
        for _ in range(args.epochs):
            k = slot % len(contenders)
            slot += 1
            for who, step in contenders[k:] + contenders[:k]:
                t0 = time.perf_counter()
                step()
                acc[who] += time.perf_counter() - t0
        for who in acc:
            sums[who].append(acc[who] / args.epochs)
    return {
        "ours_ms": 1e3 * statistics.median(sums["ours"]), "again_ms": 1e3 * statistics.median(sums["again"]),
        "theirs_ms": 1e3 * statistics.median(sums["theirs"]),
        "ratio": statistics.median(a / b for a, b in zip(sums["ours"], sums["theirs"])),
        "noise": statistics.median(a / b for a, b in zip(sums["ours"], sums["again"])),
        "rounds_ms": {who: [round(1e3 * t, 3) for t in ts] for who, ts in sums.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated rows: gcn, gat, gcn dense, gat dense, gat paper")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory() as tmp:
        sets = data_sets(Path(tmp))
    for _, _, desc in sets.values():
        print(f"data: {desc}", flush=True)
    rows = []
    for name, contenders in build_cases(sets, only):
        r = {"case": name, **time_case(contenders, args)}
        rows.append(r)
        print(f"{name:28s} ours {r['ours_ms']:9.2f} ms  again {r['again_ms']:9.2f}  theirs {r['theirs_ms']:9.2f}  "
              f"ratio {r['ratio']:6.3f}  noise {r['noise']:6.3f}", flush=True)
    devs = sorted(abs(r["noise"] - 1.0) for r in rows)
    band = devs[min(len(devs) - 1, int(0.9 * len(devs)))] if devs else 0.0
    for r in rows:
        r["verdict"] = "<= 1" if r["ratio"] <= 1.0 else "within noise" if r["ratio"] - 1.0 <= band else "slower"

    import torch_geometric

    print(f"\nfull-batch training epoch (zero_grad + forward + backward + Adam), torch {torch.__version__}, "
          f"torch_geometric {torch_geometric.__version__}, {args.threads} thread(s), {args.rounds} rounds x "
          f"{args.epochs} epochs; noise (ours / identical copy): median |1 - r| "
          f"{statistics.median(devs) if devs else 0:.3f}, 90th percentile {band:.3f}")
    print(f"{'case':28s} {'tricklab ms':>12s} {'torch_geometric ms':>19s} {'ratio':>7s} {'noise':>7s}  verdict")
    for r in rows:
        print(f"{r['case']:28s} {r['ours_ms']:12.2f} {r['theirs_ms']:19.2f} {r['ratio']:7.3f} {r['noise']:7.3f}  "
              f"{r['verdict']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "gnn_epoch", "data": [d for _, _, d in sets.values()], "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "threads": args.threads, "rounds": args.rounds,
        "epochs_per_round": args.epochs, "warmup": args.warmup, "noise_band_p90": band, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
