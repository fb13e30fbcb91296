"""The graph type shared by graph data sets, loaders, layers and models: a plain edge-index graph.

Convention (the same as the message-passing literature and torch_geometric): ``edge_index[0]`` holds source
nodes and ``edge_index[1]`` target nodes; a message flows from source to target, and a node aggregates the
messages of the edges that point to it. An undirected graph stores both directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Graph:
    """One graph, or several batched into one disconnected graph (``batch`` maps nodes to graphs).

    Attributes:
        x: (N, F) node features: dense, or a sparse COO tensor (bag-of-words features; kept coalesced, so its
            entries are sorted by (node, feature); other sparse layouts are converted to COO).
        edge_index: (2, E) int64, sources in row 0, targets in row 1.
        y: node labels (N,), or graph labels (G,) for graph-level tasks; optional.
        batch: (N,) int64 graph id per node when batched (None for a single graph).
        num_graphs: G.
        masks: named boolean node masks (e.g. "train", "val", "test") of shape (N,).
    """

    x: Tensor
    edge_index: Tensor
    y: Tensor | None = None
    batch: Tensor | None = None
    num_graphs: int = 1
    masks: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 2:
            raise ValueError(f"Graph.x must be (num_nodes, num_features), got shape {tuple(self.x.shape)}")
        if self.x.layout != torch.strided and not (self.x.layout == torch.sparse_coo and self.x.is_coalesced()):
            self.x = self.x.to_sparse_coo().coalesce()
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"Graph.edge_index must be (2, num_edges), got shape {tuple(self.edge_index.shape)}")
        if self.edge_index.dtype != torch.long:
            raise ValueError(f"Graph.edge_index must be int64, got {self.edge_index.dtype}")
        if self.edge_index.numel() and (int(self.edge_index.min()) < 0 or int(self.edge_index.max()) >= self.num_nodes):
            raise ValueError(f"Graph.edge_index refers to nodes outside [0, {self.num_nodes})")

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Graph:
        def mv(t: Any) -> Any:
            return t.to(device, non_blocking=non_blocking) if isinstance(t, Tensor) else t

        return replace(self, x=mv(self.x), edge_index=mv(self.edge_index), y=mv(self.y), batch=mv(self.batch),
                       masks={k: mv(v) for k, v in self.masks.items()})

    @property
    def device(self) -> torch.device:
        return self.x.device


def batch_graphs(graphs: Sequence[Graph]) -> Graph:
    """Join graphs into one disconnected graph: node features concatenated, edge indices offset by the
    number of nodes before each graph, ``batch[i]`` = index of node i's graph, graph labels stacked.
    Features stay sparse when every graph's are sparse (a mix is joined dense)."""
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    sparse = all(g.x.layout != torch.strided for g in graphs)
    xs, edges, batch, ys = [], [], [], []
    offset = 0
    for g_id, g in enumerate(graphs):
        xs.append(g.x if sparse or g.x.layout == torch.strided else g.x.to_dense())
        edges.append(g.edge_index + offset)
        batch.append(torch.full((g.num_nodes,), g_id, dtype=torch.long, device=g.x.device))
        if g.y is not None:
            ys.append(g.y.reshape(-1))
        offset += g.num_nodes
    y = torch.cat(ys) if len(ys) == len(graphs) else None
    x = torch.cat(xs).coalesce() if sparse else torch.cat(xs)
    return Graph(x=x, edge_index=torch.cat(edges, dim=1), y=y, batch=torch.cat(batch),
                 num_graphs=len(graphs))


__all__ = ["Graph", "batch_graphs"]
