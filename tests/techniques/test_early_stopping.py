"""Early stopping: patience, min_delta, mode, restore_best, and a clear error for an unknown metric.

Reference: the simple slow path, a scripted sequence of metric values whose expected stop step and best
step are worked out by hand in each test; restored weights are compared bit-exactly with a probe's copy.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import EMA, EarlyStopping
from tricklab.train import Technique, Trainer


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def scripted(values: list[float], key: str = "accuracy"):
    """A metric_fn returning the next scripted value at each evaluation."""
    it = iter(values)

    def metric_fn(logits, targets):
        return {key: next(it), "loss": 0.0}

    return metric_fn


class WeightRecorder(Technique):
    name = "weight_recorder"
    reads = frozenset({"params", "eval_weights"})
    after = frozenset({"ema"})

    def __init__(self, ema: EMA | None = None) -> None:
        self.by_step: dict[int, list[torch.Tensor]] = {}
        self.ema = ema

    def on_after_step(self, state) -> None:
        src = self.ema.shadow if self.ema is not None else list(state.raw_model.parameters())
        self.by_step[state.step] = [p.detach().clone() for p in src]


def _fit(metric_values, es, extra=(), max_steps=30, eval_every=1, model=None):
    torch.manual_seed(0)
    x, y = _data()
    model = model or nn.Linear(4, 3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[es, *extra], max_steps=max_steps, eval_data=(x, y), eval_every=eval_every,
                      metric_fn=scripted(metric_values))
    return trainer.fit(), model


def test_stops_after_patience_non_improving_evaluations() -> None:
    # best 0.5 at eval 3 (step 3); evals 4, 5, 6 do not improve -> stop after step 6 with patience 3
    es = EarlyStopping(metric="accuracy", patience=3)
    st, _ = _fit([0.1, 0.3, 0.5, 0.5, 0.4, 0.2] + [0.9] * 30, es)
    assert st.should_stop and st.step == 6
    assert st.stop_reason is not None and "early stopping" in st.stop_reason
    assert "accuracy" in st.stop_reason and "step 3" in st.stop_reason
    assert es.best == 0.5 and es.best_step == 3 and es.bad_evals == 3


def test_improvement_resets_the_patience_counter() -> None:
    es = EarlyStopping(patience=2)
    st, _ = _fit([0.1, 0.0, 0.2, 0.1, 0.3, 0.3, 0.3] + [1.0] * 30, es)
    assert st.step == 7 and es.best == 0.3 and es.best_step == 5


def test_min_delta() -> None:
    # improvements smaller than min_delta do not count: 0.105 and 0.109 are not > 0.1 + 0.01
    es = EarlyStopping(patience=2, min_delta=0.01)
    st, _ = _fit([0.1, 0.105, 0.109] + [1.0] * 30, es)
    assert st.step == 3 and es.best == 0.1 and es.best_step == 1
    es2 = EarlyStopping(patience=2, min_delta=0.01)
    st2, _ = _fit([0.1, 0.115, 0.12, 0.121] + [1.0] * 30, es2)
    assert st2.step == 4 and es2.best == 0.115


def test_mode_min() -> None:
    es = EarlyStopping(metric="loss", mode="min", patience=2)
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    vals = iter([3.0, 2.0, 2.5, 1.0, 1.5, 1.2, 0.1, 0.0])
    st = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                 techniques=[es], max_steps=30, eval_data=(x, y), eval_every=1,
                 metric_fn=lambda lo, ta: {"loss": next(vals)}).fit()
    assert st.step == 6 and es.best == 1.0 and es.best_step == 4


def test_real_metric_from_default_metrics() -> None:
    """With the default metric_fn the watched key is present; a long budget is cut short."""
    es = EarlyStopping(metric="loss", mode="min", patience=1, min_delta=10.0)
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    st = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                 techniques=[es], max_steps=100, eval_data=(x, y), eval_every=2).fit()
    assert st.step == 4 and st.stop_reason


def test_restore_best_restores_the_best_weights() -> None:
    es, rec = EarlyStopping(patience=3, restore_best=True), WeightRecorder()
    st, model = _fit([0.1, 0.6, 0.2, 0.3, 0.4] + [1.0] * 30, es, extra=[rec])
    assert st.step == 5 and es.best_step == 2
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), rec.by_step[2]))
    assert not all(torch.equal(p, r) for p, r in zip(model.parameters(), rec.by_step[5]))


def test_without_restore_best_the_last_weights_stay() -> None:
    es, rec = EarlyStopping(patience=3), WeightRecorder()
    st, model = _fit([0.1, 0.6, 0.2, 0.3, 0.4] + [1.0] * 30, es, extra=[rec])
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), rec.by_step[5]))
    assert es.best_weights == {}


def test_restore_best_with_ema_keeps_the_evaluated_averaged_weights() -> None:
    """At eval_end early stopping runs before EMA swaps back, so 'best' is the EMA weights evaluated."""
    ema = EMA(decay=0.5, warmup=False)
    es, rec = EarlyStopping(patience=2, restore_best=True), WeightRecorder(ema)
    st, model = _fit([0.1, 0.9, 0.2, 0.3] + [1.0] * 30, es, extra=[ema, rec])
    assert st.step == 4
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), rec.by_step[2]))


def test_unknown_metric_raises_clear_value_error() -> None:
    es = EarlyStopping(metric="f1")
    with pytest.raises(ValueError, match=r"'f1'.*\['accuracy', 'loss'\]"):
        _fit([0.1] * 10, es)


@pytest.mark.parametrize("kwargs", [{"mode": "maximum"}, {"patience": 0}, {"patience": 2.5}])
def test_invalid_args(kwargs) -> None:
    with pytest.raises(ValueError):
        EarlyStopping(**kwargs)


def test_state_dict_round_trip() -> None:
    es = EarlyStopping(patience=5, restore_best=True)
    _fit([0.1, 0.6, 0.2, 0.3], es, max_steps=4)
    sd = es.state_dict()
    fresh = EarlyStopping(patience=5, restore_best=True)
    fresh.load_state_dict(sd)
    out = fresh.state_dict()
    assert {k: out[k] for k in ("best", "best_step", "bad_evals")} == {"best": 0.6, "best_step": 2, "bad_evals": 2}
    assert out["best_weights"].keys() == sd["best_weights"].keys() == {"weight", "bias"}
    assert all(torch.equal(out["best_weights"][k], sd["best_weights"][k]) for k in sd["best_weights"])
