"""Views, probes and the transfer run function.

References: ``grid_sample`` at scale 1 and no offset is the identity (pixel centres map onto themselves), so a
crop of scale (1, 1) must return the input exactly; scikit-learn's KNeighborsClassifier (cosine metric,
uniform weights, brute force) for the k-NN accuracy; a separable problem for the linear probe (it must fit).
"""

from __future__ import annotations

import pytest
import torch

from tricklab.transfer.probe import knn_accuracy, linear_probe
from tricklab.data.views import image_view, random_resized_crop, signal_view, weak_view


@pytest.mark.parametrize("shape", [(4, 40), (4, 1, 40), (4, 1, 12, 12)])
def test_full_scale_crop_is_the_identity(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    out = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)  # float32 rounding of the grid coordinates


def test_views_keep_the_shape_and_are_seeded() -> None:
    x = torch.randn(8, 40)
    img = torch.rand(8, 1, 28, 28)
    for fn, inp in ((signal_view, x), (image_view, img), (weak_view, x), (weak_view, img)):
        a = fn(inp, torch.Generator().manual_seed(3))
        b = fn(inp, torch.Generator().manual_seed(3))
        c = fn(inp, torch.Generator().manual_seed(4))
        assert a.shape == inp.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_knn_matches_scikit_learn() -> None:
    neighbors = pytest.importorskip("sklearn.neighbors")
    g = torch.Generator().manual_seed(0)
    ft, yt = torch.randn(200, 6, generator=g), torch.randint(0, 4, (200,), generator=g)
    fs, ys = torch.randn(50, 6, generator=g), torch.randint(0, 4, (50,), generator=g)
    ref = neighbors.KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(ft.numpy(), yt.numpy())
    assert knn_accuracy(ft, yt, fs, ys, k=5) == pytest.approx(float((ref.predict(fs.numpy()) == ys.numpy()).mean()))


def test_linear_probe_fits_a_separable_problem() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    f = torch.randn(300, 5, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 5).float() * 3
    out = linear_probe(f[:200], y[:200], f[200:], y[200:], steps=200)
    assert out["train_acc"] == 1.0 and out["test_acc"] == 1.0


def test_transfer_run_reports_every_method_with_its_trained_parameters() -> None:
    pytest.importorskip("mnist1d")
    from tricklab.transfer.run_transfer import TRANSFER_METHODS, TransferConfig, run_transfer

    cfg = TransferConfig(pretrain_steps=2, steps=2, labels_per_class=2, width=4, feature_dim=8)
    a, b = run_transfer(cfg, seed=0), run_transfer(cfg, seed=0)
    assert {k: v for k, v in a.metrics.items() if k != "seconds"} == {
        k: v for k, v in b.metrics.items() if k != "seconds"}
    p = {m: a.metrics[f"{m}_trained_params"] for m in TRANSFER_METHODS}
    assert p["scratch"] == p["finetune"] and p["linear_probe"] == 8 * 5 + 5  # the new head only
    assert p["linear_probe"] < p["lora"] < p["finetune"] and p["linear_probe"] < p["adapters"] < p["finetune"]
    assert p["gradual_unfreezing"] == p["finetune"]  # every group is unfrozen by the end
