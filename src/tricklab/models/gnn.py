"""Graph neural networks for node and graph classification, built from :mod:`tricklab.layers.graph`.

Every model takes a :class:`~tricklab.data.graph.Graph` and returns logits: (N, C) for the node models
(``gcn``, ``gat``, ``graphsage``) and (G, C) for the graph models (``gcn_graph``, ``gated_gnn``), which pool node
states per graph with ``graph.batch`` / ``graph.num_graphs`` (a graph without ``batch`` is one graph).
``input_shape = (F,)``: the number of node features.

Sparse node features (a sparse COO ``graph.x``, as the Planetoid loader returns) stay sparse in ``gcn`` and ``gat``:
dropout on their non-zeros only and a sparse x dense first product (:mod:`tricklab.layers.graph_ops`). The other
models densify them first.

* ``gcn``       - Kipf & Welling 2017's Cora model: GCN(F, 16) - ReLU - GCN(16, C), dropout 0.5 before each layer.
* ``gat``       - Velickovic et al. 2018's Cora model: GAT(F, 8, heads 8, concat) - ELU - GAT(64, C, 1 head),
                  dropout 0.6 on each layer's input and on the attention coefficients. ``protocol="paper"``
                  follows the authors' code instead of torch_geometric's example: each head drops its input
                  independently, dropout also on the projected features, attention biases, per-head Glorot.
* ``graphsage`` - Hamilton et al. 2017: SAGE(F, 64) - ReLU - SAGE(64, C), aggregator 'mean' | 'max' | 'lstm'.
* ``gcn_graph`` - GCN layers - ReLU - global mean pooling - Linear, for graph classification.
* ``gated_gnn`` - Li et al. 2016: GatedGraph(T steps) - global pooling - Linear, for graph classification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.graph import GATConv, GatedGraphConv, GCNConv, SAGEConv
from tricklab.layers.graph_ops import global_pool, to_dense_features
from tricklab.models import MODELS, as_shape, check_positive

if TYPE_CHECKING:  # the models only read attributes of the graph; no import of tricklab.data at run time
    from tricklab.data.graph import Graph


def _check_rate(model: str, **rates: float) -> None:
    for name, p in rates.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ConfigError(f"model {model!r}: {name} must be a float in [0, 1), got {p!r}")


def _check_choice(model: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"model {model!r}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


class GCN(nn.Module):
    """Two-layer GCN for node classification (Kipf & Welling 2017, eq. 9): softmax(Â ReLU(Â X W0) W1) logits.

    Dropout before each layer; the first is the first layer's ``input_dropout`` (on sparse features, their
    non-zeros only), the same draw as ``F.dropout`` on dense features."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, dropout: float = 0.5,
                 cached: bool = True) -> None:
        super().__init__()
        self.dropout = dropout
        self.conv1 = GCNConv(in_channels, hidden, cached=cached, input_dropout=dropout)
        self.conv2 = GCNConv(hidden, num_classes, cached=cached)

    def forward(self, graph: Graph) -> Tensor:
        x = F.relu(self.conv1(graph.x, graph.edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, graph.edge_index)


GAT_PROTOCOLS = ("pyg", "paper")


class GAT(nn.Module):
    """Two-layer GAT for node classification (Velickovic et al. 2018, transductive Cora setting).

    ``protocol="pyg"``: torch_geometric's example model: one dropout mask on each layer's input shared by the
    heads, dropout on the attention coefficients. ``protocol="paper"``: the authors' code (PetarV-/GAT,
    ``utils/layers.py`` ``attn_head``): every head drops its own input, and also its projected features where
    they are aggregated; the attention has biases; each head is Glorot-initialised on its own.
    """

    def __init__(self, in_channels: int, hidden: int, heads: int, num_classes: int, out_heads: int = 1,
                 dropout: float = 0.6, protocol: str = "pyg") -> None:
        super().__init__()
        self.dropout, self.protocol = dropout, protocol
        paper = protocol == "paper"
        kw = {"dropout": dropout, "input_dropout": dropout}
        if paper:
            kw.update(independent_head_dropout=True, feature_dropout=dropout, attention_bias=True, per_head_init=True)
        self.conv1 = GATConv(in_channels, hidden, heads, concat=True, **kw)  # type: ignore[arg-type]
        # output layer: the paper averages its K output heads (K = 1 on Cora, 8 on PubMed)
        self.conv2 = GATConv(hidden * heads, num_classes, out_heads, concat=False, **kw)  # type: ignore[arg-type]

    def forward(self, graph: Graph) -> Tensor:
        x = F.elu(self.conv1(graph.x, graph.edge_index))
        return self.conv2(x, graph.edge_index)


class GraphSAGE(nn.Module):
    """GraphSAGE for node classification (Hamilton et al. 2017), full-batch or on sampled neighbourhoods."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, num_layers: int = 2, aggr: str = "mean",
                 dropout: float = 0.5, normalize: bool = False) -> None:
        super().__init__()
        self.dropout = dropout
        dims = [in_channels] + [hidden] * (num_layers - 1) + [num_classes]
        # L2 normalisation (Alg. 1 line 7) applies to hidden representations, not to the output logits
        self.convs = nn.ModuleList(
            SAGEConv(a, b, aggr, normalize=normalize and k < num_layers - 1)  # type: ignore[arg-type]
            for k, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))
        )

    def forward(self, graph: Graph, edge_indices: Sequence[Tensor] | None = None) -> Tensor:
        """``edge_indices``: one edge index per layer (from :func:`~tricklab.layers.graph.sample_neighbors`, with
        ``graph.x`` the sampled nodes' features); None runs every layer on ``graph.edge_index``."""
        if edge_indices is not None and len(edge_indices) != len(self.convs):
            raise ValueError(f"GraphSAGE has {len(self.convs)} layers but got {len(edge_indices)} edge indices")
        x = to_dense_features(graph.x)
        for k, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, graph.edge_index if edge_indices is None else edge_indices[k])
            if k < len(self.convs) - 1:
                x = F.relu(x)
        return x


class GCNGraphClassifier(nn.Module):
    """GCN layers - ReLU - global mean pooling - dropout - Linear: (G, C) logits for a batch of graphs."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, num_layers: int = 3, dropout: float = 0.5,
                 pool: str = "mean") -> None:
        super().__init__()
        self.dropout, self.pool = dropout, pool
        dims = [in_channels] + [hidden] * num_layers
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, graph: Graph) -> Tensor:
        x = to_dense_features(graph.x)
        for conv in self.convs:
            x = F.relu(conv(x, graph.edge_index))
        g = global_pool(x, graph.batch, graph.num_graphs, self.pool)  # type: ignore[arg-type]
        return self.head(F.dropout(g, self.dropout, self.training))


class GatedGNNClassifier(nn.Module):
    """Gated graph network (Li et al. 2016) for graph classification: node features (zero-padded to ``hidden``,
    or linearly projected when there are more features than hidden channels) - GatedGraphConv (``steps``
    propagation steps) - global pooling - Linear."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, steps: int = 3, pool: str = "sum",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.pool, self.dropout = pool, dropout
        self.proj = nn.Linear(in_channels, hidden) if in_channels > hidden else None
        self.ggnn = GatedGraphConv(hidden, steps)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, graph: Graph) -> Tensor:
        x = to_dense_features(graph.x)
        x = x if self.proj is None else self.proj(x)
        h = self.ggnn(x, graph.edge_index)
        g = global_pool(h, graph.batch, graph.num_graphs, self.pool)  # type: ignore[arg-type]
        return self.head(F.dropout(g, self.dropout, self.training))


def _features(input_shape: tuple[int, ...], model: str) -> int:
    return as_shape(input_shape, model=model, ndim=(1,))[0]


@MODELS.register("gcn", summary="Kipf & Welling 2017 two-layer GCN for node classification (hidden 16, dropout 0.5).")
def gcn(input_shape: tuple[int, ...], num_classes: int, hidden: int = 16, dropout: float = 0.5,
        cached: bool = True) -> nn.Module:
    """Kipf & Welling 2017 two-layer GCN (Cora setting)."""
    f = _features(input_shape, "gcn")
    check_positive("gcn", hidden=hidden)
    _check_rate("gcn", dropout=dropout)
    return GCN(f, hidden, num_classes, dropout, cached)


@MODELS.register("gat", summary="Velickovic et al. 2018 two-layer GAT for node classification (8 heads x 8, ELU, "
                                "dropout 0.6; protocol='paper' for the authors' code).")
def gat(input_shape: tuple[int, ...], num_classes: int, hidden: int = 8, heads: int = 8, out_heads: int = 1,
        dropout: float = 0.6, protocol: str = "pyg") -> nn.Module:
    """Velickovic et al. 2018 two-layer GAT (Cora setting); ``protocol`` 'pyg' (torch_geometric's example) or
    'paper' (the authors' code: per-head input dropout, dropout on the projected features, attention biases)."""
    f = _features(input_shape, "gat")
    check_positive("gat", hidden=hidden, heads=heads, out_heads=out_heads)
    _check_rate("gat", dropout=dropout)
    _check_choice("gat", "protocol", protocol, GAT_PROTOCOLS)
    return GAT(f, hidden, heads, num_classes, out_heads, dropout, protocol)


@MODELS.register("graphsage", summary="Hamilton et al. 2017 GraphSAGE for node classification (2 layers, hidden 64).")
def graphsage(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, num_layers: int = 2,
              aggr: str = "mean", dropout: float = 0.5, normalize: bool = False) -> nn.Module:
    """Hamilton et al. 2017 GraphSAGE with a mean, max-pool or LSTM aggregator."""
    f = _features(input_shape, "graphsage")
    check_positive("graphsage", hidden=hidden, num_layers=num_layers)
    _check_rate("graphsage", dropout=dropout)
    _check_choice("graphsage", "aggr", aggr, ("mean", "max", "lstm"))
    return GraphSAGE(f, hidden, num_classes, num_layers, aggr, dropout, normalize)


@MODELS.register("gcn_graph", summary="GCN layers + global mean pooling + linear, for graph classification.")
def gcn_graph(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, num_layers: int = 3,
              dropout: float = 0.5, pool: str = "mean") -> nn.Module:
    """GCN graph classifier: GCN layers, global pooling, linear head."""
    f = _features(input_shape, "gcn_graph")
    check_positive("gcn_graph", hidden=hidden, num_layers=num_layers)
    _check_rate("gcn_graph", dropout=dropout)
    _check_choice("gcn_graph", "pool", pool, ("sum", "mean", "max"))
    return GCNGraphClassifier(f, hidden, num_classes, num_layers, dropout, pool)


@MODELS.register("gated_gnn", summary="Li et al. 2016 gated graph network + global pooling + linear, for graph "
                                      "classification.")
def gated_gnn(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, steps: int = 3, pool: str = "sum",
              dropout: float = 0.0) -> nn.Module:
    """Li et al. 2016 gated graph neural network for graph classification."""
    f = _features(input_shape, "gated_gnn")
    check_positive("gated_gnn", hidden=hidden, steps=steps)
    _check_rate("gated_gnn", dropout=dropout)
    _check_choice("gated_gnn", "pool", pool, ("sum", "mean", "max"))
    return GatedGNNClassifier(f, hidden, num_classes, steps, pool, dropout)


__all__ = ["GAT", "GCN", "GCNGraphClassifier", "GatedGNNClassifier", "GraphSAGE", "gat", "gated_gnn", "gcn",
           "gcn_graph", "graphsage"]
