"""Client partitions of a labelled set for federated simulation.

* IID (McMahan et al., 2017): a random permutation cut into equal shards.
* Non-IID by label with a Dirichlet prior (Hsu, Qi & Brown, 2019): for each class c, proportions
  p_c ~ Dir(alpha * 1_K) over the K clients, and the class's examples are dealt out in those proportions;
  small alpha (0.1) gives clients dominated by one or two classes, large alpha approaches IID.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tricklab.errors import ConfigError

__all__ = ["iid_split", "dirichlet_split"]


def iid_split(n: int, clients: int, seed: int = 0) -> list[Tensor]:
    """``clients`` index tensors of (nearly) equal size covering 0..n-1 once."""
    if not 1 <= clients <= n:
        raise ConfigError(f"clients must be in 1..{n} (one example each at least), got {clients}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [s.sort().values for s in torch.tensor_split(perm, clients)]


def dirichlet_split(y: Tensor, clients: int, alpha: float, seed: int = 0, min_size: int = 1,
                    max_tries: int = 100) -> list[Tensor]:
    """Label-skewed shards: per class, proportions ~ Dir(alpha) over clients; redrawn (up to ``max_tries``) until
    every client holds at least ``min_size`` examples."""
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0 (smaller is more skewed, e.g. 0.1), got {alpha}")
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [torch.tensor(sorted(s), dtype=torch.long) for s in shards]
    raise ConfigError(f"could not give every one of {clients} clients {min_size} examples with alpha {alpha} in "
                      f"{max_tries} draws; raise alpha or lower clients")
