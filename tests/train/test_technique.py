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


# ------------------------------------------------------------------------------ exclusive owners (issue 11)
def test_two_owners_of_the_accumulation_count_are_refused_naming_both() -> None:
    from tricklab.techniques import GradAccumulation

    with pytest.raises(ConflictError, match=r"'grad_accumulation' and 'grad_accumulation#2'.*accum_steps"):
        plan([GradAccumulation(2), GradAccumulation(4)])
    other = make("my_accumulator", writes={"accum_steps"}, events=("fit_start",))
    with pytest.raises(ConflictError, match=r"'grad_accumulation' and 'my_accumulator'.*accum_steps") as e:
        plan([GradAccumulation(2), other])
    assert str(e.value).count("conflict") == 1  # one message for the pair


def test_two_owners_of_the_loss_scale_are_refused_naming_both() -> None:
    from tricklab.techniques import MixedPrecision

    with pytest.raises(ConflictError, match=r"'mixed_precision' and 'mixed_precision#2'.*loss_scale"):
        plan([MixedPrecision(), MixedPrecision()])
    other = make("my_scaler", writes={"loss_scale"}, events=("after_backward",))
    with pytest.raises(ConflictError, match=r"'my_scaler' and 'mixed_precision'.*loss_scale"):
        plan([other, MixedPrecision()])


@pytest.mark.parametrize("slot", ["accum_steps", "loss_scale", "loss_fn", "eval_weights", "batch.targets"])
def test_the_new_exclusive_slots_conflict(slot: str) -> None:
    with pytest.raises(ConflictError, match=slot.replace(".", r"\.")):
        plan([make("a", writes={slot}), make("b", writes={slot})])


def test_shared_flags_are_not_exclusive() -> None:
    """skip_step and the stop request are flags: several techniques may set them (the loss scaler and the NaN
    guard both skip steps)."""
    assert plan([make("a", writes={"skip_step", "stop"}), make("b", writes={"skip_step", "stop"})])


# --------------------------------------------------------------------------------- derived order (issue 11)
def _order(techniques: list[Technique], event: str) -> list[str]:
    p = plan(techniques)
    return [p.names[i] for i in p.order[event]]


def test_gradient_stages_order_without_names() -> None:
    """raw-gradient check -> recompute -> transform -> clip -> final check, for every list order; the names sort
    the other way round, so only the declared stages can produce this order."""
    import itertools

    ts = [make("z_check_raw", reads={"grads.raw"}), make("y_recompute", writes={"grads.recomputed"}),
          make("x_observe", reads={"grads.recomputed"}), make("w_transform", writes={"grads.transformed"}),
          make("v_clip", writes={"grads.clipped"}), make("u_check_final", reads={"grads"})]
    expected = ["z_check_raw", "y_recompute", "x_observe", "w_transform", "v_clip", "u_check_final"]
    for perm in itertools.permutations(ts):
        assert _order(list(perm), "after_backward") == expected


def test_input_stages_and_the_loss_pipeline_order_without_names() -> None:
    batch = [make("d_mix", writes={"batch.inputs.mixed", "batch.targets"}, events=("batch_start",)),
             make("c_erase", writes={"batch.inputs.erased"}, events=("batch_start",)),
             make("b_flip", writes={"batch.inputs.geometric"}, events=("batch_start",)),
             make("a_init_on_batch", reads={"batch.inputs"}, events=("batch_start",))]
    assert _order(batch, "batch_start") == ["b_flip", "c_erase", "d_mix", "a_init_on_batch"]
    loss = [make("a_penalty", writes={"loss"}, events=("loss",)),
            make("z_replace", writes={"loss_fn"}, events=("loss",))]
    assert _order(loss, "loss") == ["z_replace", "a_penalty"]


def test_teardown_event_runs_readers_before_the_writer() -> None:
    """eval_weights at eval_start: the averager swaps in first; at eval_end (its teardown) readers of the
    evaluated weights run before it swaps them out."""
    averager = make("a_averager", writes={"eval_weights"}, events=("eval_start", "eval_end"))
    reader = make("b_reader", reads={"eval_weights"}, events=("eval_start", "eval_end"))
    assert _order([reader, averager], "eval_start") == ["a_averager", "b_reader"]
    assert _order([averager, reader], "eval_end") == ["b_reader", "a_averager"]


def test_a_slot_orders_only_where_it_can_be_written() -> None:
    """skip_step may be written only at after_backward / before_step: at fit_start a reader of it is not forced
    after a technique that writes it elsewhere (names decide), at after_backward it is."""
    writer = make("z_scaler", writes={"skip_step"}, events=("fit_start", "after_backward"))
    reader = make("a_averager", reads={"skip_step"}, events=("fit_start", "after_backward"))
    assert _order([writer, reader], "fit_start") == ["a_averager", "z_scaler"]
    assert _order([writer, reader], "after_backward") == ["z_scaler", "a_averager"]


def test_the_pipeline_decides_before_a_flag() -> None:
    """A final-gradient check that sets skip_step runs after a transform that reads skip_step: the gradient stage
    wins over the flag's writer-before-reader; a pure writer of the flag runs before a reader that also writes."""
    transform = make("a_transform", reads={"skip_step"}, writes={"grads.transformed"})
    guard = make("b_guard", reads={"grads", "skip_step"}, writes={"skip_step"})
    scaler = make("c_scaler", reads={"grads.raw"}, writes={"skip_step"})
    assert _order([guard, transform, scaler], "after_backward") == ["c_scaler", "a_transform", "b_guard"]
    assert _order([guard, scaler], "after_backward") == ["c_scaler", "b_guard"]


def test_explicit_order_wins_over_the_data_flow() -> None:
    writer = make("a_writer", writes={"params"})
    reader = make("b_reader", reads={"params"}, before={"a_writer"})
    assert _order([writer, reader], "after_backward") == ["b_reader", "a_writer"]


def test_builtin_order_needs_no_names() -> None:
    """Only four built-in techniques still name another (checkpointing before early_stopping at fit_end; swa after
    lr_schedule, two owners of lr; multi_scale after the geometric augmentations, which all write the same
    stage and whose arguments are written for the native size; qat after checkpointing at fit_end, so the last
    checkpoint holds the trainable fake-quant model, and checkpointing declares no slot to order it by): every
    other order comes from the slots."""
    from tricklab.techniques import TECHNIQUES

    named = {n: (sorted(c.after), sorted(c.before)) for n, c in TECHNIQUES.items() if c.after or c.before}
    assert named == {"checkpointing": ([], ["early_stopping"]), "swa": (["lr_schedule"], []),
                     "multi_scale": (["random_flip", "random_shift"], []), "qat": (["checkpointing"], [])}


# ------------------------------------------------------------------------------- declarations (issue 11)
def test_instance_declarations_go_through_declare() -> None:
    from tricklab.techniques import SWA

    plain, with_lr = SWA(), SWA(swa_lr=0.01)
    assert "lr" not in plain.writes and {"lr", "eval_weights"} <= with_lr.writes and "lr" in with_lr.reads
    assert "lr" not in SWA.writes  # the class declaration is untouched
    t = make("x")
    with pytest.raises(ConfigError, match=r"unknown writes slot.*gradz"):
        t.declare(writes={"gradz"})


def test_register_technique_checks_the_class() -> None:
    from tricklab.techniques import register_technique

    class NoName(Technique):
        def on_fit_start(self, state) -> None: ...

    with pytest.raises(ConfigError, match="needs a name"):
        register_technique(NoName)
    typo = type("Typo", (Technique,), {"name": "typo_technique", "on_after_stpe": lambda self, s: None})
    with pytest.raises(ConfigError, match="unknown event"):
        register_technique(typo)
    bad_slot = type("BadSlot", (Technique,), {"name": "bad_slot", "writes": frozenset({"grad"})})
    with pytest.raises(ConfigError, match="unknown writes slot"):
        register_technique(bad_slot)
    with pytest.raises(TypeError, match="Technique subclass"):
        register_technique(int)
