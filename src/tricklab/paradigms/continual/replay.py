"""Experience replay with a reservoir buffer (Vitter's Algorithm R; Chaudhry et al., 2019, "tiny episodic
memories").

Item n (0-based) of the stream is stored while the buffer has room; after that it replaces a uniformly chosen
slot with probability capacity / (n + 1). Every item seen so far is then in the buffer with the same probability
capacity / n_seen, whatever its position in the stream.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ReservoirBuffer"]


class ReservoirBuffer:
    """A fixed-size uniform sample of every (x, y, task) seen, with its own seeded generator."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.seen = capacity, 0
        self.gen = torch.Generator().manual_seed(seed)
        self.x: Tensor | None = None
        self.y = torch.empty(0, dtype=torch.long)
        self.task = torch.empty(0, dtype=torch.long)
        self.ids = torch.empty(0, dtype=torch.long)  # stream position of each stored item (for tests)

    def __len__(self) -> int:
        return len(self.y)

    def add(self, x: Tensor, y: Tensor, task: int = 0) -> None:
        """Offer a batch (B, ...) item by item in stream order."""
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self.y = torch.empty(0, dtype=torch.long)
        for i in range(len(x)):
            n = self.seen
            self.seen += 1
            if len(self.y) < self.capacity:
                self.x[len(self.y)] = x[i]
                self.y = torch.cat([self.y, y[i : i + 1]])
                self.task = torch.cat([self.task, torch.tensor([task])])
                self.ids = torch.cat([self.ids, torch.tensor([n])])
                continue
            j = int(torch.randint(0, n + 1, (1,), generator=self.gen))
            if j < self.capacity:  # keep item n with probability capacity / (n + 1), in a uniform slot
                self.x[j], self.y[j], self.task[j], self.ids[j] = x[i], y[i], task, n

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """(x, y, task) of ``batch_size`` stored items drawn uniformly with replacement."""
        if not len(self):
            raise ValueError("the buffer is empty: add items before sampling")
        assert self.x is not None
        idx = torch.randint(0, len(self), (batch_size,), generator=self.gen)
        return self.x[idx], self.y[idx], self.task[idx]
