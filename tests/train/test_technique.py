"""The technique contract: slot validation, conflict refusal, declaration-derived order, trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError, ConflictError
from tricklab.train import Technique, Trainer, plan


def make(name: str, reads=(), writes=(), after=(), before=(), composes_with=(), events=("after_backward",)):
    attrs = {"name": name, "reads": frozenset(reads), "writes": frozenset(writes), "after": frozenset(after),
             "before": frozenset(before), "composes_with": frozenset(composes_with)}
    for e in events:
        attrs[f"on_{e}"] = lambda self, state: None
    return type(name.title(), (Technique,), attrs)()


def test_two_weight_averagers_are_refused_naming_both() -> None:
    ema, swa = make("ema", writes={"eval_weights"}), make("swa", writes={"eval_weights"})
    with pytest.raises(ConflictError, match=r"'ema' and 'swa'.*eval_weights"):
        plan([ema, swa])


@pytest.mark.parametrize("slot", ["batch.targets", "lr", "optimizer"])
def test_every_exclusive_slot_conflicts(slot: str) -> None:
    with pytest.raises(ConflictError, match=slot.replace(".", r"\.")):
        plan([make("a", writes={slot}), make("b", writes={slot})])


def test_composes_with_allows_a_shared_exclusive_slot() -> None:
    mixup = make("mixup", writes={"batch.targets"})
    mix = make("mix", writes={"batch.targets"}, composes_with={"mixup"})
    assert plan([mixup, mix]).names == ("mixup", "mix")


def test_shared_non_exclusive_slot_is_allowed() -> None:
    assert len(plan([make("clip", reads={"grads"}, writes={"grads"}), make("gc", writes={"grads"})]).names) == 2


def test_unknown_slot_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown writes slot"):
        plan([make("x", writes={"gradz"})])


def test_order_follows_data_flow_not_list_position() -> None:
    writer = make("zz_writer", writes={"grads"})
    reader = make("aa_reader", reads={"grads"})
    for techniques in ([writer, reader], [reader, writer]):
        p = plan(techniques)
        order = [p.names[i] for i in p.order["after_backward"]]
        assert order == ["zz_writer", "aa_reader"]  # writer first although its name sorts last


def test_explicit_after_and_ties_by_name() -> None:
    a, b, c = make("b_second", after={"c_first"}), make("a_free"), make("c_first")
    for techniques in ([a, b, c], [c, b, a], [b, a, c]):
        p = plan(techniques)
        order = [p.names[i] for i in p.order["after_backward"]]
        assert order.index("c_first") < order.index("b_second")
        assert order == ["a_free", "c_first", "b_second"]


def test_cycle_is_refused_naming_members() -> None:
    a, b = make("a", after={"b"}), make("b", after={"a"})
    with pytest.raises(ConflictError, match=r"cycle"):
        plan([a, b])


def test_builtin_techniques_compose() -> None:
    from tricklab.techniques import EMA, GradAccumulation, GradClip, MixedPrecision, NanGuard

    p = plan([NanGuard(), GradClip(), MixedPrecision(), EMA(), GradAccumulation()])
    order = [p.names[i] for i in p.order["after_backward"]]
    assert order == ["mixed_precision", "grad_clip", "nan_guard"]  # unscale/skip, then clip, then check


def test_trace_records_events_in_loop_order() -> None:
    class Recorder(Technique):
        name = "recorder"

        def __getattr__(self, item):  # handle every event
            if item.startswith("on_"):
                return lambda state: None
            raise AttributeError(item)

    torch.manual_seed(0)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = nn.Linear(3, 2)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 20, seed=0),
                      techniques=[Recorder()], eval_data=(x, y), eval_every=2, max_steps=2, trace=True)
    trainer.fit()
    events = [e for _, e, _ in trainer.trace]
    assert events[:9] == ["fit_start", "epoch_start", "batch_start", "forward", "loss", "after_backward",
                          "before_step", "after_step", "checkpoint_save"]
    assert events[-1] == "fit_end"
    # second step evaluates, logs, ends the epoch (2 batches of 20), saves
    step2 = [e for s, e, _ in trainer.trace if s == 2]
    assert step2 == ["after_step", "eval_start", "eval_end", "log", "checkpoint_save", "epoch_end", "fit_end"]
    assert "checkpoint_load" not in events
