"""Progressive neural networks (Rusu et al., 2016).

One column (an MLP) per task; when task k starts, the earlier columns are frozen and column k's layer i receives
lateral inputs from layer i-1 of every earlier column (Rusu et al. eq. 1):
    h_i^(k) = relu( W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j) ),
so old tasks cannot be forgotten (their weights never change) and new tasks can reuse old features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ProgressiveNet"]


class _Column(nn.Module):
    def __init__(self, sizes: list[int], prev: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # lateral U_i^(k:j) for layers i >= 1, from each of the ``prev`` earlier columns' layer i-1 output
        self.laterals = nn.ModuleList(
            nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1], bias=False) for _ in range(prev))
            for i in range(1, len(sizes) - 1))


class ProgressiveNet(nn.Module):
    """Columns of ``sizes`` (input, hidden..., output); ``add_column()`` freezes all columns so far and adds one."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.columns = nn.ModuleList()
        self.add_column()

    def add_column(self) -> None:
        old = list(self.parameters())
        for p in old:
            p.requires_grad_(False)
        col = _Column(self.sizes, len(self.columns))
        self.columns.append(col.to(old[0].dtype) if old else col)  # same dtype as a model moved by .double()

    def forward(self, x: Tensor, column: int = -1) -> Tensor:
        """Output of column ``column`` (default: the newest), computing the earlier columns it reads from."""
        k = column % len(self.columns)
        hs: list[list[Tensor]] = []  # hs[j][i]: input of layer i in column j
        for j in range(k + 1):
            col = self.columns[j]
            h, acts = x, [x]
            for i, layer in enumerate(col.layers):
                z = layer(h)
                if i >= 1:
                    for jj, lat in enumerate(col.laterals[i - 1]):
                        z = z + lat(hs[jj][i])
                h = torch.relu(z) if i < len(col.layers) - 1 else z
                acts.append(h)
            hs.append(acts)
        return hs[k][-1]
