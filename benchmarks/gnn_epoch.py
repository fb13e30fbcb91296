"""Full-batch training-epoch time of tricklab's GCN and GAT models against torch_geometric equivalents.

One epoch = forward on the whole graph, cross-entropy on the training nodes, backward, Adam step (lr 0.01,
weight decay 5e-4), in train mode (dropout on). Models: Kipf & Welling's 2-layer GCN (hidden 16, dropout 0.5,
normalisation cached: transductive, the graph never changes; torch_geometric's ``GCNConv(cached=True)``) and
Velickovic et al.'s GAT (8 heads x 8 hidden, ELU, 1 output head, dropout 0.6 on inputs and attention). The
torch_geometric models are built from ``GCNConv`` / ``GATConv`` with the same structure and start from the same
weights (copied), so both do the same work.

Also timed: one GCN / GAT layer's forward + backward on 64 random hidden features of the same graph
(``gcn_layer``: 64 -> 64, cached; ``gat_layer``: 64 -> 8 x 8 heads), the message-passing part alone.

Data: the real Cora if ``tricklab.data.load_dataset("cora")`` returns a graph (an object with ``x`` and
``edge_index``), else a random graph with Cora's sizes (2708 nodes, 1433 binary features of density 1.3%,
10556 directed edges, 7 classes, 140 training nodes); the output says which.

After ``--warmup`` untimed epochs each, single epochs alternate ours/theirs (the order flipped every epoch) in
one process, so both see the same machine load; a round is ``--epochs`` such pairs. The table gives the median
over rounds of the mean seconds per epoch and the median over rounds of the paired ratio ours/theirs.

    python benchmarks/gnn_epoch.py [--rounds 7] [--epochs 20] [--warmup 3] [--threads 1]

Writes ``benchmarks/results/gnn_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "gnn_epoch.json"


def load_cora_or_random() -> tuple[Tensor, Tensor, Tensor, Tensor, int, str]:
    """(x, edge_index, y, train_mask, num_classes, description)."""
    try:
        from tricklab.data import load_dataset

        ds: Any = load_dataset("cora")
        g = getattr(ds, "graph", ds)
        x, ei, y = g.x.float(), g.edge_index, g.y
        masks = getattr(g, "masks", {}) or {}
        train = masks.get("train", torch.arange(x.shape[0]) < 140)
        return x, ei, y, train, int(y.max()) + 1, f"real Cora ({x.shape[0]} nodes, {ei.shape[1]} edges)"
    except Exception as exc:  # the Planetoid reader is not there yet, or returns another type
        reason = f"{type(exc).__name__}: {str(exc)[:80]}"
    gen = torch.Generator().manual_seed(0)
    n, f, e, c = 2708, 1433, 10556, 7
    x = (torch.rand(n, f, generator=gen) < 0.0127).float()
    half = torch.randint(0, n, (2, e // 2), generator=gen)
    ei = torch.cat([half, half.flip(0)], dim=1)  # undirected, as Cora: both directions stored
    y = torch.randint(0, c, (n,), generator=gen)
    train = torch.arange(n) < 140
    return x, ei, y, train, c, f"random graph with Cora's sizes ({n} nodes, {f} features, {e} edges, {c} classes; cora not loadable: {reason})"


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


def copy_gcn(ours: nn.Module, theirs: PygGCN) -> None:
    with torch.no_grad():
        for a, b in [(ours.conv1, theirs.conv1), (ours.conv2, theirs.conv2)]:
            b.lin.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def copy_gat(ours: nn.Module, theirs: PygGAT) -> None:
    with torch.no_grad():
        for a, b in [(ours.conv1, theirs.conv1), (ours.conv2, theirs.conv2)]:
            b.lin.weight.copy_(a.weight)
            b.att_src.copy_(a.att_src.view_as(b.att_src))
            b.att_dst.copy_(a.att_dst.view_as(b.att_dst))
            b.bias.copy_(a.bias)


def make_step(model: nn.Module, call: Callable[[], Tensor], y: Tensor, train: Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(call()[train], y[train]).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tricklab.data.graph import Graph

    x, ei, y, train, c, data_desc = load_cora_or_random()
    graph = Graph(x=x, edge_index=ei, y=y)
    f = x.shape[1]
    print(f"data: {data_desc}")

    # same initial weights and outputs (eval mode) before timing: a timing of different work would mean nothing
    torch.manual_seed(0)
    gcn_ours, gat_ours = build_model("gcn", (f,), c), build_model("gat", (f,), c)
    gcn_theirs, gat_theirs = PygGCN(f, c), PygGAT(f, c)
    copy_gcn(gcn_ours, gcn_theirs)
    copy_gat(gat_ours, gat_theirs)
    for ours, theirs in [(gcn_ours, gcn_theirs), (gat_ours, gat_theirs)]:
        ours.eval(), theirs.eval()
        with torch.no_grad():
            diff = (ours(graph) - theirs(x, ei)).abs().max().item()
        assert diff < 1e-4, f"models disagree before timing: {diff}"

    cases = {
        "gcn": (make_step(gcn_ours, lambda: gcn_ours(graph), y, train),
                make_step(gcn_theirs, lambda: gcn_theirs(x, ei), y, train)),
        "gat": (make_step(gat_ours, lambda: gat_ours(graph), y, train),
                make_step(gat_theirs, lambda: gat_theirs(x, ei), y, train)),
    }
    # the message-passing part alone: one layer's forward + backward on 64 hidden features (no dropout, no
    # 1433-wide input), where the two implementations differ; the model epochs above share the dense work
    from torch_geometric.nn import GATConv as PygGATConv, GCNConv as PygGCNConv

    from tricklab.layers.graph import GATConv, GCNConv

    h = torch.randn(x.shape[0], 64, generator=torch.Generator().manual_seed(1))
    layer_pairs = {"gcn_layer": (GCNConv(64, 64, cached=True), PygGCNConv(64, 64, cached=True)),
                   "gat_layer": (GATConv(64, 8, 8), PygGATConv(64, 8, 8))}

    def layer_step(layer: nn.Module) -> Callable[[], None]:
        def step() -> None:
            hh = h.clone().requires_grad_(True)
            layer(hh, ei).square().sum().backward()
        return step

    for lname, (lo, lt) in layer_pairs.items():
        cases[lname] = (layer_step(lo), layer_step(lt))

    results: dict[str, Any] = {}
    for name, (ours_step, theirs_step) in cases.items():
        for _ in range(args.warmup):
            ours_step(), theirs_step()
        t_ours, t_theirs, ratios = [], [], []
        for r in range(args.rounds):
            # alternate single epochs (ours, theirs, theirs, ours, ...) so that both see the same machine load
            a_sum = b_sum = 0.0
            for e in range(args.epochs):
                order = [(0, ours_step), (1, theirs_step)]
                if (r * args.epochs + e) % 2:
                    order.reverse()
                for who, step in order:
                    t0 = time.perf_counter()
                    step()
                    dt = time.perf_counter() - t0
                    if who == 0:
                        a_sum += dt
                    else:
                        b_sum += dt
            t_ours.append(a_sum / args.epochs)
            t_theirs.append(b_sum / args.epochs)
            ratios.append(a_sum / b_sum)
        results[name] = {
            "ours_s_per_epoch": t_ours, "theirs_s_per_epoch": t_theirs, "ratio_per_round": ratios,
            "ours_median_s": statistics.median(t_ours), "theirs_median_s": statistics.median(t_theirs),
            "ratio_median": statistics.median(ratios),
        }

    print(f"\nfull-batch training epoch (forward + backward + Adam), torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.epochs} epochs")
    print(f"{'model':<10} {'tricklab ms':>12} {'torch_geometric ms':>19} {'ratio ours/theirs':>18}")
    for name, r in results.items():
        print(f"{name:<10} {1e3 * r['ours_median_s']:>12.2f} {1e3 * r['theirs_median_s']:>19.2f} {r['ratio_median']:>18.3f}")

    import torch_geometric

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "data": data_desc, "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "threads": args.threads,
        "rounds": args.rounds, "epochs_per_round": args.epochs, "warmup": args.warmup, "results": results,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
