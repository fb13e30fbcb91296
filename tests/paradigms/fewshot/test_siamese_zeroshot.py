"""Episodes, siamese pairs, one-shot scoring and ESZSL.

References: set algebra on class ids (episodes never contain a training class); a hand-built episode whose
answer is known; ESZSL's closed form checked by the gradient of its objective (eq. 3) being zero at V (torch
autograd in float64) and against NumPy's ``lstsq``-free direct formula; a synthetic problem where features are a
linear function of the attributes, so unseen classes must be recognised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.data.low_label import class_split, group_class_split
from tricklab.paradigms.fewshot.siamese import FewShotEpisode, FewShotEpisodeSampler, episode_accuracy, sample_pairs
from tricklab.paradigms.fewshot.zeroshot import (eszsl_fit, eszsl_predict, fashion_mnist_attributes,
                                        mnist1d_template_attributes, rotated_fashion_attributes)


def test_episodes_never_contain_training_classes() -> None:
    y = torch.arange(10).repeat_interleave(20)
    train, test = class_split(10, 6, seed=0)
    assert set(train).isdisjoint(test) and sorted(train + test) == list(range(10))
    sampler = FewShotEpisodeSampler(y, test, n_way=4, k_shot=1, n_query=3, seed=0)
    for _ in range(200):
        ep = sampler.sample()
        used = set(y[ep.support].tolist()) | set(y[ep.query].tolist())
        assert used <= set(test) and used.isdisjoint(train)
        assert len(ep.support) == 4 and len(ep.query) == 12
        assert set(ep.support.tolist()).isdisjoint(ep.query.tolist())
        # episode labels map back to the original classes
        assert [ep.classes[i] for i in ep.support_labels.tolist()] == y[ep.support].tolist()
        assert [ep.classes[i] for i in ep.query_labels.tolist()] == y[ep.query].tolist()
    with pytest.raises(ConfigError, match="n_way"):
        FewShotEpisodeSampler(y, test, n_way=5)


@pytest.mark.parametrize("n_way", [5, 20])
def test_twenty_way_episodes_on_forty_grouped_classes_never_contain_training_classes_or_groups(n_way: int) -> None:
    # the labels of fashion-mnist-rot40: class c is garment c % 10 turned by c // 10 quarter turns
    y = torch.arange(40).repeat_interleave(3)
    groups = [c % 10 for c in range(40)]
    train, test = group_class_split(groups, 5, seed=0)
    sampler = FewShotEpisodeSampler(y, test, n_way=n_way, k_shot=1, n_query=1, seed=1)
    seen_groups = {groups[c] for c in train}
    for _ in range(100):
        ep = sampler.sample()
        used = set(y[ep.support].tolist()) | set(y[ep.query].tolist())
        assert len(set(ep.classes)) == n_way and used == set(ep.classes)
        assert used <= set(test) and used.isdisjoint(train) and {groups[c] for c in used}.isdisjoint(seen_groups)
    with pytest.raises(ConfigError, match="n_way"):
        FewShotEpisodeSampler(y, test, n_way=21)


def test_episode_accuracy_on_a_known_episode() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    ep = FewShotEpisode(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3, 4]), torch.tensor([0, 1, 1]),
                        [7, 3])
    assert episode_accuracy(lambda t: t, x, ep) == pytest.approx(2 / 3)  # the last query is nearer class 0


def test_pairs_are_half_similar_and_from_the_given_classes() -> None:
    y = torch.arange(5).repeat_interleave(10)
    i, j, label = sample_pairs(y, [0, 2, 4], 100, torch.Generator().manual_seed(0))
    assert set(y[i].tolist()) | set(y[j].tolist()) <= {0, 2, 4}
    assert torch.equal(label, (y[i] != y[j]).long()) and int((label[::2] == 0).sum()) == 50


def _objective(v, x, y, s, gamma, lam):
    return (((x.T @ v @ s - y) ** 2).sum() + gamma * ((v @ s) ** 2).sum() + lam * ((x.T @ v) ** 2).sum()
            + gamma * lam * (v ** 2).sum())


def test_eszsl_closed_form_minimises_its_objective() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(30, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=g)
    attrs = torch.randn(4, 3, generator=g, dtype=torch.float64)
    v = eszsl_fit(feats, labels, attrs, gamma=0.5, lam=2.0, bias=False).requires_grad_(True)
    y = -torch.ones(30, 4, dtype=torch.float64)
    y[torch.arange(30), labels] = 1
    (grad,) = torch.autograd.grad(_objective(v, feats.T, y, attrs.T, 0.5, 2.0), [v])
    assert float(grad.abs().max()) < 1e-9
    # NumPy, eq. (4) as printed
    xn, yn, sn = feats.numpy().T, y.numpy(), attrs.numpy().T
    ref = np.linalg.inv(xn @ xn.T + 0.5 * np.eye(5)) @ xn @ yn @ sn.T @ np.linalg.inv(sn @ sn.T + 2.0 * np.eye(3))
    np.testing.assert_allclose(v.detach().numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_eszsl_recognises_unseen_classes_when_features_follow_the_attributes(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    attrs = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    proj = torch.randn(8, 20, generator=g)
    y = torch.arange(16).repeat_interleave(40)
    feats = attrs[y] @ proj + 0.1 * torch.randn(len(y), 20, generator=g)
    seen, unseen = list(range(12)), [12, 13, 14, 15]
    tr = torch.isin(y, torch.tensor(seen))
    v = eszsl_fit(feats[tr], y[tr], attrs[seen], gamma=1.0, lam=1.0)
    pred = eszsl_predict(feats[~tr], v, attrs[unseen])
    assert float((torch.tensor(unseen)[pred] == y[~tr]).float().mean()) > 0.9  # chance is 1/4


def test_attribute_tables_separate_every_class() -> None:
    fa = fashion_mnist_attributes()
    assert fa.shape == (10, 12) and len({tuple(r) for r in fa.tolist()}) == 10
    ra = rotated_fashion_attributes()  # garment g at k quarter turns is row g + 10 k
    assert ra.shape == (40, 16) and len({tuple(r) for r in ra.tolist()}) == 40
    assert torch.equal(ra[23, :12], fa[3]) and torch.equal(ra[23, 12:], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    pytest.importorskip("mnist1d")
    ma = mnist1d_template_attributes()
    assert ma.shape == (10, 12) and torch.cdist(ma, ma).add(torch.eye(10)).min() > 0.1
