"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, 2019) on a small 1-D cell space.

Search space: a cell of ``nodes`` intermediate nodes; node j (1..nodes) sums one operation from every earlier node
i < j (node 0 is the stem output); the cell outputs the mean of its intermediate nodes. Candidate operations on
(B, C, L) maps: none (zero), skip, conv3, conv5, dilated conv3 (dilation 2), max pool 3, avg pool 3.

Continuous relaxation (Liu et al. eq. 1): the edge (i, j) computes the mixed operation
    o_bar(x) = sum_{o in O} softmax(alpha_{i,j})_o * o(x).
Bilevel problem (eq. 3-4): min_alpha L_val(w*(alpha), alpha) with w*(alpha) = argmin_w L_train(w, alpha).
First-order DARTS alternates a w step on L_train and an alpha step on L_val at the current w; second-order DARTS
(eq. 6-7) takes the alpha gradient at the one-step unrolled weights w' = w - xi grad_w L_train(w, alpha), here by
exact double backpropagation rather than the paper's finite-difference Hessian-vector product (eq. 8; the same
quantity on a model this small). Discretisation (Sec. 2.4): each node keeps its ``keep`` strongest incoming edges,
an edge's strength being its largest non-zero operation weight, with that operation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["OPS", "PRIMITIVES", "Genotype", "MixedOp", "SearchNet", "FixedNet", "discretize", "darts_step",
           "genotype_cost", "random_genotype"]

Genotype = list[list[tuple[int, str]]]  # per intermediate node: (input node, operation name) pairs


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 0.0


def _conv(c: int, k: int, dilation: int = 1) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Conv1d(c, c, k, padding=dilation * (k - 1) // 2, dilation=dilation))


OPS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda c: Zero(),
    "skip": lambda c: nn.Identity(),
    "conv3": lambda c: _conv(c, 3),
    "conv5": lambda c: _conv(c, 5),
    "dilconv3": lambda c: _conv(c, 3, dilation=2),
    "maxpool3": lambda c: nn.MaxPool1d(3, stride=1, padding=1),
    "avgpool3": lambda c: nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False),
}
PRIMITIVES: tuple[str, ...] = tuple(OPS)


class MixedOp(nn.Module):
    """sum_o weights[o] * op_o(x) over the candidate operations (eq. 1 with weights = softmax(alpha))."""

    def __init__(self, channels: int, primitives: tuple[str, ...] = PRIMITIVES) -> None:
        super().__init__()
        self.primitives = primitives
        self.ops = nn.ModuleList(OPS[p](channels) for p in primitives)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


def _edges(nodes: int) -> list[tuple[int, int]]:
    return [(i, j) for j in range(1, nodes + 1) for i in range(j)]


class _Net(nn.Module):
    """Stem conv (1 -> C), the cell, ReLU, flatten, linear head: the MNIST-1D ConvNet's shape around one cell."""

    def __init__(self, channels: int, length: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, channels, 3, padding=1)
        self.head = nn.Linear(channels * length, classes)

    def _cell(self, h0: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        h = self._cell(self.stem(x.unsqueeze(1)))
        return self.head(torch.relu(h).flatten(1))


class SearchNet(_Net):
    """The over-parameterised network: a MixedOp on every edge and the architecture parameters ``alpha``
    (edges, ops)."""

    def __init__(self, channels: int = 16, nodes: int = 3, length: int = 40, classes: int = 10,
                 primitives: tuple[str, ...] = PRIMITIVES) -> None:
        super().__init__(channels, length, classes)
        self.nodes, self.primitives = nodes, primitives
        self.edges = _edges(nodes)
        self.mixed = nn.ModuleList(MixedOp(channels, primitives) for _ in self.edges)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(self.edges), len(primitives)))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def _cell(self, h0: Tensor) -> Tensor:
        w = F.softmax(self.alpha, dim=-1)
        states = [h0]
        for j in range(1, self.nodes + 1):
            states.append(sum(self.mixed[e](states[i], w[e]) for e, (i, jj) in enumerate(self.edges) if jj == j))
        return torch.stack(states[1:]).mean(0)


class FixedNet(_Net):
    """The discrete network of a genotype, trained from scratch after the search."""

    def __init__(self, genotype: Genotype, channels: int = 16, length: int = 40, classes: int = 10) -> None:
        super().__init__(channels, length, classes)
        self.genotype = genotype
        self.ops = nn.ModuleList(nn.ModuleList(OPS[op](channels) for _, op in node) for node in genotype)

    def _cell(self, h0: Tensor) -> Tensor:
        states = [h0]
        for node, ops in zip(self.genotype, self.ops):
            states.append(sum(op(states[i]) for (i, _), op in zip(node, ops)))
        return torch.stack(states[1:]).mean(0)


def discretize(net: SearchNet, keep: int = 2) -> Genotype:
    """Per node, the ``keep`` incoming edges with the largest non-zero operation weight, with that operation."""
    w = F.softmax(net.alpha.detach(), dim=-1)
    names = net.primitives
    geno: Genotype = []
    for j in range(1, net.nodes + 1):
        cands = []
        for e, (i, jj) in enumerate(net.edges):
            if jj != j:
                continue
            best = max((float(w[e, o]), names[o]) for o in range(len(names)) if names[o] != "none")
            cands.append((best[0], i, best[1]))
        cands.sort(reverse=True)
        geno.append(sorted((i, op) for _, i, op in cands[:keep]))
    return geno


def random_genotype(nodes: int, gen: torch.Generator, keep: int = 2,
                    primitives: tuple[str, ...] = PRIMITIVES) -> Genotype:
    """A uniform draw from the discrete space: per node ``keep`` distinct inputs and a non-zero operation each."""
    ops = [p for p in primitives if p != "none"]
    geno: Genotype = []
    for j in range(1, nodes + 1):
        inputs = torch.randperm(j, generator=gen)[: min(keep, j)].tolist()
        geno.append(sorted((int(i), ops[int(torch.randint(len(ops), (1,), generator=gen))]) for i in inputs))
    return geno


def genotype_cost(genotype: Genotype, channels: int = 16, length: int = 40, classes: int = 10) -> int:
    """The parameter count of the genotype's FixedNet (the cost matched by the random baseline)."""
    return sum(p.numel() for p in FixedNet(genotype, channels, length, classes).parameters())


def darts_step(net: SearchNet, w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
               train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], second_order: bool = False,
               xi: float = 0.01) -> tuple[float, float]:
    """One alternating bilevel step: alpha on the validation batch (first order, or at the unrolled weights
    w - xi grad_w L_train), then w on the training batch. Returns (train loss, val loss)."""
    a_opt.zero_grad(set_to_none=True)
    if second_order:
        names = [n for n, _ in net.named_parameters() if n != "alpha"]
        w = dict(zip(names, net.weight_parameters()))
        lt = F.cross_entropy(net(train[0]), train[1])
        g = torch.autograd.grad(lt, list(w.values()), create_graph=True)
        unrolled = {n: p - xi * gi for (n, p), gi in zip(w.items(), g)}
        unrolled["alpha"] = net.alpha
        lv = F.cross_entropy(functional_call(net, unrolled, (val[0],)), val[1])
        (ga,) = torch.autograd.grad(lv, [net.alpha])
        net.alpha.grad = ga
    else:
        lv = F.cross_entropy(net(val[0]), val[1])
        lv.backward(inputs=[net.alpha])
    a_opt.step()
    w_opt.zero_grad(set_to_none=True)
    lt = F.cross_entropy(net(train[0]), train[1])
    lt.backward(inputs=net.weight_parameters())
    w_opt.step()
    return float(lt.detach()), float(lv.detach())
