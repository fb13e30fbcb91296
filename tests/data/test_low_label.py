"""Low-label splits and the semi-supervised loader. References: counting by class with torch.bincount, set
algebra on the indices, and InMemoryLoader itself (the labelled and unlabelled streams are two of them)."""

from __future__ import annotations

import pytest
import torch

from tricklab.data.low_label import SemiSupervisedLoader, low_label_split
from tricklab.errors import DataError


def test_split_is_stratified_disjoint_complete_and_seeded() -> None:
    y = torch.arange(10).repeat_interleave(30)
    s = low_label_split(y, 4, seed=3)
    assert torch.equal(torch.bincount(y[s.labelled], minlength=10), torch.full((10,), 4))
    assert set(s.labelled.tolist()).isdisjoint(s.unlabelled.tolist())
    assert sorted(s.labelled.tolist() + s.unlabelled.tolist()) == list(range(300))
    assert torch.equal(s.labelled, low_label_split(y, 4, seed=3).labelled)
    assert not torch.equal(s.labelled, low_label_split(y, 4, seed=4).labelled)
    with pytest.raises(DataError, match="fewer than"):
        low_label_split(y, 31, seed=0)


def test_loader_batches_and_resume() -> None:
    xl, yl = torch.arange(6.0)[:, None], torch.arange(6) % 3
    xu = 100 + torch.arange(40.0)[:, None]
    loader = SemiSupervisedLoader(xl, yl, xu, labelled_batch=4, mu=2, seed=0)
    assert len(loader) == 5  # 40 unlabelled / (2 * 4) per batch
    seen_u = []
    for _ in range(3):
        x, y = loader.next_batch()
        assert x.shape == (12, 1) and (y[:4] >= 0).all() and (y[4:] == -100).all()
        assert set(x[:4, 0].tolist()) <= set(xl[:, 0].tolist())
        seen_u += x[4:, 0].tolist()
    state = loader.state_dict()
    rest = [loader.next_batch() for _ in range(2)]
    other = SemiSupervisedLoader(xl, yl, xu, labelled_batch=4, mu=2, seed=0)
    other.load_state_dict(state)
    for a, b in zip(rest, [other.next_batch() for _ in range(2)]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    seen_u += [v for x, _ in rest for v in x[4:, 0].tolist()]
    assert sorted(seen_u) == xu[:, 0].tolist()  # one epoch = one pass over the unlabelled examples
    with pytest.raises(DataError, match="mu"):
        SemiSupervisedLoader(xl, yl, xu, 4, mu=0)
