"""Every registered attribution method: a map shaped like the inputs, no hook or function mode left behind
after a call (also when the model raises half-way), every submodule's training flag restored, parameter .grad
untouched; and the feature groups Kernel SHAP uses on large inputs. References: the module's own hook
dictionaries and torch's function-mode stack before and after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explain_helpers import hooks_left
from tricklab.explain import ATTRIBUTIONS, attribute, faithfulness_scores, wachter_counterfactual
from tricklab.explain.methods import DEFAULT_METHODS, default_feature_mask


class Exploding(nn.Module):
    """A small 1-D CNN with nn.ReLU modules, a max pool and a dropout, that raises on its N-th forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool1d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6, 3)
        self.calls = 0
        self.explode_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.explode_at is not None and self.calls >= self.explode_at:
            raise RuntimeError("boom")
        h = self.pool(self.act(self.conv(x.reshape(x.shape[0], 1, 12))))
        return self.fc(self.drop(h).flatten(1))


def _state(m: nn.Module) -> tuple[int, int, list[bool]]:
    return hooks_left(m), torch._C._len_torch_function_stack(), [mod.training for mod in m.modules()]


def test_every_default_method_is_registered() -> None:
    assert set(DEFAULT_METHODS) == set(ATTRIBUTIONS.names())


@pytest.mark.parametrize("name", ATTRIBUTIONS.names())
def test_shape_and_nothing_left_behind(name: str) -> None:
    torch.manual_seed(0)
    m = Exploding()
    m.train()
    m.drop.eval()  # a submodule with its own mode
    x = torch.randn(3, 12)
    bg = torch.randn(4, 12)
    before = _state(m)
    out = attribute(name, m, x, torch.tensor([0, 1, 2]), background=bg, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert _state(m) == before
    assert all(p.grad is None for p in m.parameters())
    if name == "random":  # the control never calls the model
        return
    # now the model raises on its second forward call, inside the method's work
    m.calls, m.explode_at = 0, 2
    with pytest.raises(RuntimeError, match="boom"):
        attribute(name, m, x, None, background=bg, generator=torch.Generator().manual_seed(0))
    assert _state(m) == before


def test_metric_and_counterfactual_restore_modes() -> None:
    m = Exploding()
    m.train()
    x = torch.randn(2, 12)
    faithfulness_scores(m, x, torch.rand_like(x), 0, steps=4)
    wachter_counterfactual(m, x, 1, steps=3, rounds=1)
    assert m.training and m.drop.training and hooks_left(m) == 0


def test_default_feature_mask() -> None:
    img = default_feature_mask((1, 28, 28))
    assert img.shape == (1, 28, 28) and int(img.max()) + 1 == 49  # 4x4 patches
    assert torch.equal(img[0, :4, :4], torch.zeros(4, 4, dtype=torch.long))
    sig = default_feature_mask((40,))
    assert int(sig.max()) + 1 == 40
    long_sig = default_feature_mask((1, 200))
    assert int(long_sig.max()) + 1 <= 64 and long_sig.shape == (1, 200)
    rgb = default_feature_mask((3, 10, 10), max_features=25)
    assert torch.equal(rgb[0], rgb[2]) and int(rgb.max()) + 1 == 25
