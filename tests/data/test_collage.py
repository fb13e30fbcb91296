"""Fashion-MNIST collages (tricklab.data.datasets.collage): boxes equal the tight box of the pasted item recomputed
from the canvas pixels, classes are the source labels, splits come from the Fashion train / test images, the
same seed gives identical data, and bad arguments give clear errors. Reference: the canvas itself (every pixel
inside a box comes from its item) and the Fashion-MNIST arrays the items were drawn from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.data.datasets.collage import make_collages
from tricklab.errors import ConfigError


def _items(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 28x28 'items': a bright rectangle of random extent on black, label = index % 10."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r0, c0 = torch.randint(0, 10, (2,), generator=g).tolist()
        r1, c1 = r0 + 8 + int(torch.randint(0, 10, (1,), generator=g)), c0 + 8 + int(torch.randint(0, 10, (1,),
                                                                                                     generator=g))
        x[i, 0, r0:r1, c0:c1] = 0.5 + 0.5 * torch.rand(r1 - r0, c1 - c0, generator=g)
    return x, torch.arange(n) % 10


def test_single_object_box_is_the_tight_box_of_its_pixels() -> None:
    x, y = _items()
    canvas, boxes, labels = make_collages(x, y, 30, np.random.default_rng(0), canvas=48, min_objects=1,
                                          max_objects=1, min_size=14, max_size=30, box_threshold=0.1)
    assert canvas.shape == (30, 1, 48, 48) and boxes.shape == (30, 1, 4) and labels.shape == (30, 1)
    for i in range(30):
        on = (canvas[i, 0] >= 0.1).nonzero()
        (r0, c0), (r1, c1) = on.min(0).values.tolist(), on.max(0).values.tolist()
        cx, cy, w, h = (boxes[i, 0] * 48).tolist()
        assert (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) == pytest.approx((c0, r0, c1 + 1, r1 + 1), abs=1e-4)
        assert 0 <= labels[i, 0] < 10


def test_multiple_objects_padding_overlap_and_determinism() -> None:
    x, y = _items()
    a = make_collages(x, y, 40, np.random.default_rng(3), canvas=64, max_objects=4, max_iou=0.1)
    b = make_collages(x, y, 40, np.random.default_rng(3), canvas=64, max_objects=4, max_iou=0.1)
    for ta, tb in zip(a, b):
        assert torch.equal(ta, tb)
    canvas, boxes, labels = a
    counts = (labels >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and len(set(counts.tolist())) > 1
    for i in range(40):
        n = int(counts[i])
        assert (labels[i, :n] >= 0).all() and (labels[i, n:] == -1).all()  # filled slots first, then padding
        assert (boxes[i, n:] == 0).all()
        xyxy = torch.cat([boxes[i, :n, :2] - boxes[i, :n, 2:] / 2, boxes[i, :n, :2] + boxes[i, :n, 2:] / 2], 1)
        assert (xyxy >= -1e-6).all() and (xyxy <= 1 + 1e-6).all()
        for j in range(n):
            for k in range(j):
                lt = torch.maximum(xyxy[j, :2], xyxy[k, :2])
                rb = torch.minimum(xyxy[j, 2:], xyxy[k, 2:])
                inter = (rb - lt).clamp(min=0).prod()
                union = (xyxy[j, 2:] - xyxy[j, :2]).prod() + (xyxy[k, 2:] - xyxy[k, :2]).prod() - inter
                assert inter / union <= 0.1 + 1e-6
    assert not torch.equal(make_collages(x, y, 40, np.random.default_rng(4))[0][:5], canvas[:5])


def test_fashion_collage_dataset_splits(tmp_path: object) -> None:
    from tricklab.data import load_dataset
    from tricklab.data.datasets.fashion_mnist import DEFAULT_DIR

    if not DEFAULT_DIR.is_dir():
        pytest.skip("Fashion-MNIST files not installed (dataset-fashion-mnist)")
    d = load_dataset("fashion-collage", num_train=40, num_test=20, seed=1)
    assert d.x_train.shape == (40, 1, 64, 64) and d.x_test.shape == (20, 1, 64, 64)
    t = d.targets("train")
    assert t.shape == (40, 4, 5) and torch.equal(t[..., 0].long(), d.labels_train)
    assert d.num_classes == 10 and d.class_names[0] == "T-shirt/top"
    assert d.fingerprint() == load_dataset("fashion-collage", num_train=40, num_test=20, seed=1).fingerprint()
    assert "fashion-collage" in d.summary()


@pytest.mark.parametrize("kwargs,match", [({"num_train": 0}, "num_train"), ({"min_objects": 5}, "min_objects"),
                                          ({"max_size": 80}, "max_size"), ({"max_iou": 2.0}, "max_iou")])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    from tricklab.data.datasets.collage import load_fashion_collage

    with pytest.raises(ConfigError, match=match):
        load_fashion_collage(**kwargs)
