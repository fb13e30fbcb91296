"""Loaders for graph data with the position API of :mod:`tricklab.data.loader`.

Both expose ``epoch``, ``batch_index``, ``__len__``, ``remaining``, ``next_batch()``, ``start_next_epoch()``,
``__iter__`` (the rest of the epoch, then the next epoch if the loop ran to the end), ``state_dict()`` and
``load_state_dict()``, so the trainer drives them like :class:`~tricklab.data.loader.InMemoryLoader`.

* :class:`FullBatchGraphLoader`: node classification on one graph (Cora, karate). One batch per epoch: the
  whole graph plus targets that equal ``graph.y`` on the mask's nodes and ``ignore_index`` (-100, the
  default of ``F.cross_entropy``) elsewhere, so the loss trains on the masked nodes only.
* :class:`GraphBatchLoader`: graph classification. The graph order of epoch ``e`` is
  :func:`~tricklab.data.loader.epoch_permutation` ``(len(graphs), seed, e)`` with the same sharding rule as
  ``InMemoryLoader``; a batch is :func:`~tricklab.data.graph.batch_graphs` of its graphs. Resuming from
  ``state_dict()`` mid-epoch returns exactly the batches the uninterrupted run would have returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from tricklab.data.graph import Graph, batch_graphs
from tricklab.data.loader import _ShardedEpochOrder

__all__ = ["FullBatchGraphLoader", "GraphBatchLoader", "NeighborLoader", "masked_targets"]


def masked_targets(graph: Graph, mask_name: str, ignore_index: int = -100) -> Tensor:
    """``graph.y`` with every node outside ``graph.masks[mask_name]`` set to ``ignore_index``."""
    if graph.y is None:
        raise ValueError("the graph has no node labels (y is None)")
    if graph.y.shape != (graph.num_nodes,):
        raise ValueError(f"node labels must have shape ({graph.num_nodes},), got {tuple(graph.y.shape)}")
    if mask_name not in graph.masks:
        raise ValueError(f"the graph has no mask {mask_name!r}; it has {sorted(graph.masks)}")
    mask = graph.masks[mask_name].to(device=graph.y.device, dtype=torch.bool)
    return torch.where(mask, graph.y, torch.full_like(graph.y, ignore_index))


class FullBatchGraphLoader:
    """One batch per epoch: ``(graph, targets)`` with targets masked to ``mask_name``'s nodes."""

    def __init__(self, graph: Graph, mask_name: str = "train", *, ignore_index: int = -100) -> None:
        self.graph = graph
        self.mask_name = mask_name
        self.ignore_index = int(ignore_index)
        self.targets = masked_targets(graph, mask_name, self.ignore_index)
        if not bool((self.targets != self.ignore_index).any()):
            raise ValueError(f"mask {mask_name!r} selects no labelled node")
        self._epoch = 0
        self._batch_index = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batch_index(self) -> int:
        return self._batch_index

    def __len__(self) -> int:
        return 1

    @property
    def remaining(self) -> int:
        return len(self) - self._batch_index

    def next_batch(self) -> tuple[Graph, Tensor]:
        """Return ``(graph, targets)`` and advance; raises if this epoch's batch was already returned."""
        if self._batch_index >= 1:
            raise RuntimeError(f"epoch {self._epoch} is exhausted (its one batch was returned); "
                               "call start_next_epoch() before next_batch()")
        self._batch_index += 1
        return self.graph, self.targets

    def start_next_epoch(self) -> None:
        self._epoch += 1
        self._batch_index = 0

    def __iter__(self) -> Iterator[tuple[Graph, Tensor]]:
        while self._batch_index < len(self):
            yield self.next_batch()
        self.start_next_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batch_index": self._batch_index, "mask_name": self.mask_name,
                "num_nodes": self.graph.num_nodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; ``ValueError`` if the mask name or the graph size differ from the saver's."""
        missing = [k for k in ("epoch", "batch_index") if k not in state]
        if missing:
            raise ValueError(f"loader state is missing {missing}")
        epoch, batch_index = int(state["epoch"]), int(state["batch_index"])
        if epoch < 0 or not 0 <= batch_index <= 1:
            raise ValueError(f"loader state position (epoch {epoch}, batch {batch_index}) is out of range")
        if state.get("mask_name", self.mask_name) != self.mask_name:
            raise ValueError(f"loader state was saved for mask {state['mask_name']!r}, this loader uses "
                             f"{self.mask_name!r}")
        if int(state.get("num_nodes", self.graph.num_nodes)) != self.graph.num_nodes:
            raise ValueError(f"loader state was saved for a graph of {state['num_nodes']} nodes, this one has "
                             f"{self.graph.num_nodes}")
        self._epoch, self._batch_index = epoch, batch_index


class GraphBatchLoader(_ShardedEpochOrder):
    """Batches of whole graphs, ``(batch_graphs(graphs[i] for i in batch), graph labels)``.

    ``batch_size`` is the per-rank number of graphs; order, sharding (``rank``/``world_size``, which need
    ``drop_last=True``) and the checkpointed position follow :class:`~tricklab.data.loader.InMemoryLoader`.
    Every graph needs ``y`` holding its single graph label.
    """

    def __init__(
        self,
        graphs: Sequence[Graph],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        graphs = list(graphs)
        for i, g in enumerate(graphs):
            if not isinstance(g, Graph):
                raise TypeError(f"graphs[{i}] is a {type(g).__name__}, not a Graph")
            if g.y is None or g.y.numel() != 1:
                raise ValueError(f"graphs[{i}] must hold exactly one graph label in y, got "
                                 f"{None if g.y is None else tuple(g.y.shape)}")
        super().__init__(len(graphs), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                         world_size=world_size)
        self.graphs = graphs

    def next_batch(self) -> tuple[Graph, Tensor]:
        """Return this rank's batch at ``batch_index`` (batched graph, (B,) int64 labels) and advance."""
        self._check_not_exhausted()
        start, end = self._span(self._batch_index)
        idx = self.permutation()[start:end].tolist()
        batched = batch_graphs([self.graphs[i] for i in idx])
        self._batch_index += 1
        assert batched.y is not None  # every graph has a label (checked in __init__)
        return batched, batched.y

    def __iter__(self) -> Iterator[tuple[Graph, Tensor]]:
        while self._batch_index < len(self):
            yield self.next_batch()
        self.start_next_epoch()


class NeighborLoader(_ShardedEpochOrder):
    """Mini-batches of seed nodes with sampled neighbourhoods, for node classification on large graphs
    (GraphSAGE, Hamilton et al. 2017): each batch is the subgraph of the nodes that
    :func:`tricklab.layers.graph.sample_neighbors` reaches from ``batch_size`` seed nodes of the mask in
    ``len(fanouts)`` hops (seeds first), with every sampled edge; targets are the seeds' labels and
    ``ignore_index`` for the other nodes, so the loss trains on the seeds only.

    Running the whole model on the union of the sampled edges gives the seeds the same outputs as running
    layer l on the edges of hops 1..K-l (the extra edges point only at nodes farther out). The sample of batch
    b in epoch e is drawn with a generator seeded from (seed, e, b), so a resumed run draws the same samples.
    """

    def __init__(self, graph: Graph, mask_name: str, batch_size: int, fanouts: Sequence[int], *,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, ignore_index: int = -100) -> None:
        if mask_name not in graph.masks:
            raise KeyError(f"graph has no mask {mask_name!r}; it has {sorted(graph.masks)}")
        if graph.y is None:
            raise ValueError("NeighborLoader needs node labels (graph.y)")
        if not fanouts or any(int(f) == 0 for f in fanouts):
            raise ValueError(f"fanouts must be a non-empty list of non-zero ints (-1 = all), got {list(fanouts)}")
        self.graph = graph
        self.mask_name = mask_name
        self.fanouts = [int(f) for f in fanouts]
        self.ignore_index = ignore_index
        self.nodes = graph.masks[mask_name].nonzero().reshape(-1)
        super().__init__(int(self.nodes.numel()), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         rank=rank, world_size=world_size)

    def next_batch(self) -> tuple[Graph, Tensor]:
        from tricklab.layers.graph import sample_neighbors

        self._check_not_exhausted()
        start, end = self._span(self._batch_index)
        seeds = self.nodes[self.permutation()[start:end]]
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + self._batch_index)
                                            % (2**63 - 1))
        g = self.graph
        node_ids, edges = sample_neighbors(g.edge_index, seeds, self.fanouts, generator=gen, num_nodes=g.num_nodes)
        targets = torch.full((node_ids.numel(),), self.ignore_index, dtype=torch.long)
        targets[: seeds.numel()] = g.y[seeds]
        sub = Graph(x=g.x.index_select(0, node_ids), edge_index=edges[0], y=g.y[node_ids])  # sparse x too
        self._batch_index += 1
        return sub, targets

    def __iter__(self) -> Iterator[tuple[Graph, Tensor]]:
        while self._batch_index < len(self):
            yield self.next_batch()
        self.start_next_epoch()
