"""Contract sweep over every registered technique (``tricklab.techniques.TECHNIQUES``).

For each technique (built with the small arguments of ``CASES``, defaults otherwise), on a tiny 1-D conv net with
BatchNorm, DropBlock and dropout, SGD with momentum, six optimizer steps, an evaluation every two:

* the write audit (``technique_audit.py``) snapshots the state around every handler call and fails when a handler
  changes anything its technique did not declare in ``writes``, or writes a slot at an event where it may not be
  written; every event the technique handles must have been audited;
* exact resume: a run resumed in a fresh process (new model init, new optimizer, new loader, another global RNG
  state) from the checkpoint of step 3 ends bit-identical to the uninterrupted run (reference: that run;
  parameters, buffers, the technique's state and the history rows compared exactly), and again under gradient
  accumulation where it applies;
* the registry entry: a Technique subclass, in its own module named after it, declared slots and events valid,
  a docs page, a state_dict that survives a fresh instance and the checkpoint format;
* the naming rule of technique classes (docs/trainer.md) and that no two public classes of the package share a
  name.

Meta-tests show the audit catches each kind of undeclared write (so the sweep can fail).
"""

from __future__ import annotations

import ast
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from technique_audit import ContractViolation, WriteAudit, _same
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.layers.dropout import DropBlock
from tricklab.optim.sam import SAM
from tricklab.techniques import TECHNIQUES, Checkpointing, GradAccumulation, MixedPrecision
from tricklab.train import EVENTS, SLOTS, Technique, Trainer, TrainState, plan
from tricklab.train.checkpoint import flatten_state, unflatten_state

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "techniques"
NAMES = TECHNIQUES.names()
STEPS, RESUME_AT, BATCH, CLASSES = 6, 3, 8, 3
# configured by their own recipe keys in the lab runner (schedule, checkpoint, log_every, progress),
# which refuses them under ``techniques``; their pages show those keys instead
RUNNER_OWNED = {"checkpointing", "metrics_log", "progress", "lr_schedule"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    # tiny tensors: one thread avoids paying for thread hand-offs (and contention on a shared machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ScalingOnCPU(MixedPrecision):
    """fp16 loss scaling runs only on CUDA; this turns the scaler on around bf16 autocast, so the CPU sweep also
    runs the scaling path (growth_interval=1: the scale changes every step)."""

    def on_fit_start(self, state: TrainState) -> None:
        super().on_fit_start(state)
        self.scaling = True
        state.grad_scale = self.scale


class FixedTeacher(nn.Module):
    """A deterministic teacher for the distillation case: logits = 3 x the first CLASSES input features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * x.flatten(1)[:, :CLASSES]


@dataclass(frozen=True)
class Case:
    name: str  # registry name
    args: Callable[[Path], dict[str, Any]] = lambda tmp: {}
    build: Callable[..., Technique] | None = None  # instead of the registered class
    sam_optimizer: bool = False
    poison: bool = False  # one training example is NaN (the NaN guard must skip its step)
    accumulates: bool = True  # runs under gradient accumulation too
    tabular: bool = False  # (B, features) inputs whose last column is a 0/1 group id, and an MLP
    any_size: bool = False  # it changes the input length (multi_scale): the models end in global pooling
    group_norm: bool = False  # GroupNorm in place of BatchNorm (dp_sgd refuses batch norm)
    container: bool = False  # it wraps the model's layers in place (qat): a bare layer is wrapped in Sequential
    # arguments for the state_dict round trip (an nn.Linear(4, 3) model) when they depend on the model
    round_trip_args: Callable[[Path], dict[str, Any]] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def _optuna_trial(tmp: Path) -> dict[str, Any]:
    """A study in ``tmp`` with one trial to report to (created once: the resumed run reports to it too)."""
    import optuna

    tmp.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp / 'study.sqlite'}"
    study = optuna.create_study(storage=url, study_name="contract", load_if_exists=True, direction="maximize")
    number = study.trials[0].number if study.trials else study.ask().number
    return {"storage": url, "study_name": "contract", "trial_number": number}


def _fixed(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` initialised from seed 99 without touching the global RNG (a resumed process gets the same)."""
    with torch.random.fork_rng():
        torch.manual_seed(99)
        return build().eval()


# small arguments that make each technique act within six steps (others: the defaults)
_CASES = [
    Case("checkpointing", lambda tmp: {"every_steps": 2, "folder": str(tmp / "own")}),
    Case("metrics_log", lambda tmp: {"path": str(tmp / "m.jsonl")}),
    Case("progress", lambda tmp: {"stream": io.StringIO(), "rich": False}),
    # min_delta 1.0: only the first evaluation improves, so it stops at the second (step 4) and restores
    Case("early_stopping", lambda tmp: {"patience": 1, "min_delta": 1.0, "restore_best": True}),
    Case("ema", lambda tmp: {"decay": 0.9}),
    Case("mixed_precision", lambda tmp: {"dtype": "bfloat16"}),
    Case("mixed_precision", lambda tmp: {"dtype": "bfloat16", "init_scale": 8.0, "growth_interval": 1},
         build=ScalingOnCPU, tags=("scaling",)),
    Case("mixup", lambda tmp: {"num_classes": CLASSES}),
    Case("cutmix", lambda tmp: {"num_classes": CLASSES}),
    Case("mix", lambda tmp: {"num_classes": CLASSES}),
    Case("swa", lambda tmp: {"start_step": 2}),
    Case("swa", lambda tmp: {"start_step": 2, "swa_lr": 0.02, "anneal_steps": 2}, tags=("swa_lr",)),
    Case("diagnostics", lambda tmp: {"every": 2}),
    Case("nan_guard", poison=True),
    Case("grad_clip", lambda tmp: {"max_norm": 0.1}),
    Case("random_erasing", lambda tmp: {"p": 1.0}),
    Case("weight_penalty", lambda tmp: {"l1": 1e-3, "l2": 1e-2}),
    Case("grad_accumulation", accumulates=False),
    Case("sam", lambda tmp: {"rho": 0.1}, accumulates=False),
    Case("sam", sam_optimizer=True, accumulates=False, tags=("sam_optimizer",)),
    Case("fairness_penalty", lambda tmp: {"weight": 1.0}, tabular=True),
    Case("dp_sgd", lambda tmp: {"clip": 0.5, "noise_multiplier": 1.0, "seed": 3}, accumulates=False, group_norm=True),
    Case("mlflow_log", lambda tmp: {"tracking_uri": str(tmp / "mlruns")}),
    Case("tensorboard_log", lambda tmp: {"log_dir": str(tmp / "tensorboard")}),
    Case("optuna_pruning", lambda tmp: _optuna_trial(tmp)),
    Case("co_teaching", lambda tmp: {"forget_rate": 0.25, "num_gradual": 1}, accumulates=False),
    # a fixed parameter-free teacher: identical in the resumed process, and fits any input of >= 3 features
    Case("distillation", lambda tmp: {"teacher": FixedTeacher(), "temperature": 2.0, "alpha": 0.5}),
    # prunes at steps 1, 3 and 5 (the resume checkpoint at step 3 holds masks mid-schedule)
    Case("gradual_pruning", lambda tmp: {"final_sparsity": 0.6, "start_step": 1, "end_step": 5, "every": 2}),
    # lengths around the native 8, drawn per step: the resumed run must draw the same ones
    Case("multi_scale", lambda tmp: {"sizes": [6, 8, 12], "seed": 1}, any_size=True),
    # the sweep's targets are all labelled: on="all" and threshold 0 make the unsupervised terms act
    Case("pseudo_label", lambda tmp: {"threshold": 0.0, "on": "all"}),
    Case("fixmatch", lambda tmp: {"threshold": 0.0, "on": "all"}),
    Case("mean_teacher", lambda tmp: {"decay": 0.9, "on": "all"}),
    # wraps the conv and linear layers at fit_start (the resume checkpoint holds the observers' ranges), converts
    # them to int8 at fit_end (the models compared are the converted ones)
    Case("qat", lambda tmp: {"momentum": 0.1}, container=True),
    # a teacher of the sweep model's own architecture, fixed (its own seed, the global RNG untouched)
    Case("self_distillation", lambda tmp: {"teacher": _fixed(_model), "temperature": 2.0, "alpha": 0.5},
         round_trip_args=lambda tmp: {"teacher": _fixed(lambda: nn.Linear(4, 3))}),
]
CASES = _CASES + [Case(n) for n in NAMES if n not in {c.name for c in _CASES}]
CASE_IDS = [c.name + "".join(f"[{t}]" for t in c.tags) for c in CASES]


def _model(tabular: bool = False, any_size: bool = False, group_norm: bool = False) -> nn.Module:
    if group_norm:  # the conv net with GroupNorm(2 groups of 2 channels)
        return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                             DropBlock(0.2, block_size=3, dim=1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, CLASSES))
    if tabular:
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, CLASSES))
    if any_size:  # the same net with global average pooling before the head, so any length fits
        return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
                             DropBlock(0.2, block_size=3, dim=1), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                             nn.Dropout(0.1), nn.Linear(4, CLASSES))
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
                         DropBlock(0.2, block_size=3, dim=1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, CLASSES))


def _data(poison: bool, tabular: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if tabular:  # four features and a group id in {0, 1} as the last column
        x, xe = torch.randn(48, 5, generator=g), torch.randn(16, 5, generator=g)
        x[:, -1], xe[:, -1] = (x[:, -1] > 0).float(), (xe[:, -1] > 0).float()
        return x, torch.randint(0, CLASSES, (48,), generator=g), xe, torch.randint(0, CLASSES, (16,), generator=g)
    x, y = torch.randn(48, 2, 8, generator=g), torch.randint(0, CLASSES, (48,), generator=g)
    if poison:
        x[5, 0, 0] = float("nan")
    return x, y, torch.randn(16, 2, 8, generator=g), torch.randint(0, CLASSES, (16,), generator=g)


def _technique(case: Case, tmp: Path) -> Technique:
    cls = case.build or TECHNIQUES.get(case.name)
    return cls(**case.args(tmp))


@dataclass
class Run:
    trainer: Trainer
    technique: Technique
    audit: WriteAudit
    state: TrainState


def _run(case: Case, tmp: Path, *, accumulate: bool, resume: Path | None = None, seed: int = 0) -> Run:
    x, y, xe, ye = _data(case.poison, case.tabular)
    torch.manual_seed(seed)
    model = _model(case.tabular, case.any_size, case.group_norm)
    if case.sam_optimizer:
        opt: torch.optim.Optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    technique = _technique(case, tmp)
    harness: list[Technique] = [Checkpointing(every_steps=RESUME_AT, keep_last=10, folder=str(tmp / "resume"))]
    if accumulate:
        harness.append(GradAccumulation(steps=2))
    trainer = Trainer(model, opt, InMemoryLoader(x, y, BATCH, seed=seed), techniques=[technique, *harness],
                      eval_data=(xe, ye), eval_every=2, log_every=1, max_steps=STEPS, run_dir=tmp / "run")
    audit = WriteAudit(trainer)
    torch.manual_seed(1234 + seed)  # a resumed process starts from another global RNG state
    state = trainer.fit(resume_from=resume)
    return Run(trainer, technique, audit, state)


def check_resume_is_exact(case: Case, tmp: Path, accumulate: bool) -> None:
    ref = _run(case, tmp / "a", accumulate=accumulate)
    checkpoint = tmp / "a" / "resume" / f"step-{RESUME_AT:08d}.json"
    assert checkpoint.is_file(), f"no checkpoint at step {RESUME_AT}: the run stopped at {ref.state.step}"
    resumed = _run(case, tmp / "a", accumulate=accumulate, resume=checkpoint, seed=7)
    assert resumed.state.resumed_from == str(checkpoint) and resumed.state.step == ref.state.step
    for (k, a), b in zip(resumed.trainer.state.raw_model.state_dict().items(),
                         ref.trainer.state.raw_model.state_dict().values()):
        assert _same(a, b), f"{case.name}: {k} differs after resuming"
    assert _same(resumed.technique.state_dict(), ref.technique.state_dict())
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in ref.state.history]
    assert _same([{k: v for k, v in row.items() if k != "seconds"} for row in resumed.state.history], strip)
    # every event the technique handles was audited, in one run or the other
    audited = {e for (n, e) in (*ref.audit.calls, *resumed.audit.calls) if n == case.name}
    assert audited == set(technique_events(ref.technique)), (case.name, audited)


def technique_events(t: Technique) -> list[str]:
    return t.handled_events()


# --------------------------------------------------------------------------------------------------- sweep
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_handlers_write_only_what_they_declare_and_resume_is_exact(case: Case, tmp_path: Path) -> None:
    check_resume_is_exact(case, tmp_path, accumulate=False)


@pytest.mark.parametrize("case", [c for c in CASES if c.accumulates], ids=[i for c, i in zip(CASES, CASE_IDS)
                                                                           if c.accumulates])
def test_the_same_under_gradient_accumulation(case: Case, tmp_path: Path) -> None:
    check_resume_is_exact(case, tmp_path, accumulate=True)


def test_every_registered_technique_is_swept() -> None:
    assert {c.name for c in CASES} == set(NAMES)
    assert len(NAMES) >= 27


def test_the_sweep_exercises_the_writes(tmp_path: Path) -> None:
    """The audited runs are not vacuous: the techniques that should change state do (NaN guard skips the poisoned
    step, the scaler changes the scale, early stopping stops, LSUV draws, SWA with swa_lr sets the lr)."""
    tmp = tmp_path
    by_id = dict(zip(CASE_IDS, CASES))
    st = _run(by_id["nan_guard"], tmp / "n", accumulate=False).state
    assert st.counters.get("nonfinite_steps") == 1
    mp = _run(by_id["mixed_precision[scaling]"], tmp / "m", accumulate=False)
    assert mp.state.grad_scale == 8.0 * 2 ** STEPS and mp.technique.scaling
    es = _run(by_id["early_stopping"], tmp / "e", accumulate=False).state
    assert es.should_stop and es.step == 4
    swa = _run(by_id["swa[swa_lr]"], tmp / "s", accumulate=False)
    assert swa.state.lr == pytest.approx(0.02) and "lr" in swa.technique.writes


# ---------------------------------------------------------------------------------------------- meta-tests
class Misbehaves(Technique):
    """Does one thing at one event; declares only what it is told to (the audit must catch the rest)."""

    name = "misbehaves"

    def __init__(self, event: str, action: Callable[[TrainState], None], writes: frozenset[str] = frozenset()):
        self.declare(writes=writes)
        setattr(self, f"on_{event}", action)


def _scale_lr(s: TrainState) -> None:
    for g in s.optimizer.param_groups:
        g["lr"] *= 0.5


@torch.no_grad()
def _nudge_weights(s: TrainState) -> None:
    torch._foreach_add_(list(s.raw_model.parameters()), 1e-3)


def _scale_momentum(s: TrainState) -> None:
    for st in s.optimizer.state.values():
        st["momentum_buffer"].mul_(0.5)


# (event, action, the slot that declares it; None: nothing may)
MISDEEDS: dict[str, tuple[str, Callable[[TrainState], Any], str | None]] = {
    "skip flag": ("after_backward", lambda s: setattr(s, "skip_step", True), "skip_step"),
    "gradients": ("after_backward", lambda s: torch._foreach_mul_(s.grads(), 0.5), "grads.transformed"),
    "learning rate": ("before_step", _scale_lr, "lr"),
    "global RNG": ("batch_start", lambda s: torch.rand(1), "rng"),
    "log row": ("log", lambda s: s.history[-1].update(extra=1.0), "log_row"),
    "module configuration": ("batch_start", lambda s: setattr(s.raw_model[3], "drop_prob", 0.3),
                             "model.structure"),
    "accumulation count": ("fit_start", lambda s: setattr(s, "accum_steps", 2), "accum_steps"),
    "loss scale": ("fit_start", lambda s: setattr(s, "grad_scale", 2.0), "loss_scale"),
    "inputs": ("batch_start", lambda s: setattr(s, "inputs", s.inputs * 1.0), "batch.inputs"),
    "targets": ("batch_start", lambda s: setattr(s, "targets", s.targets.flip(0)), "batch.targets"),
    "loss": ("loss", lambda s: setattr(s, "loss", s.loss * 2.0), "loss"),
    "weights": ("after_step", _nudge_weights, "params"),
    "norm statistics": ("after_step", lambda s: s.raw_model[1].running_mean.add_(1.0), "norm_stats"),
    "optimizer state": ("after_step", _scale_momentum, "optimizer"),
    "stop request": ("eval_end", lambda s: setattr(s, "should_stop", True), "stop"),
    "counters": ("after_step", lambda s: s.counters.update(mine=1), "counters"),
    "skip flag at the wrong event": ("after_step", lambda s: setattr(s, "skip_step", True), None),
    "history rows (the trainer's)": ("log", lambda s: s.history.append({"step": -1}), None),
    "step counter (the trainer's)": ("after_step", lambda s: setattr(s, "step", s.step + 1), None),
}
WRONG_EVENT_DECLARATION = {"skip flag at the wrong event": "skip_step", "history rows (the trainer's)": "log_row"}


def _audited_fit(t: Technique, tmp: Path) -> None:
    x, y, xe, ye = _data(False)
    torch.manual_seed(0)
    model = _model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      InMemoryLoader(x, y, BATCH, seed=0), techniques=[t], eval_data=(xe, ye), eval_every=2,
                      log_every=1, max_steps=2, run_dir=tmp)
    WriteAudit(trainer)
    trainer.fit()


@pytest.mark.parametrize("what", list(MISDEEDS))
def test_the_audit_catches_an_undeclared_write(what: str, tmp_path: Path) -> None:
    event, action, slot = MISDEEDS[what]
    with pytest.raises(ContractViolation, match=rf"'misbehaves' at '{event}'"):
        _audited_fit(Misbehaves(event, action), tmp_path)
    if slot is not None:  # declared, the same handler passes: the audit is about the declaration
        _audited_fit(Misbehaves(event, action, frozenset({slot})), tmp_path)
    else:  # declaring the nearest slot does not help: that field or event is not open to techniques
        with pytest.raises(ContractViolation):
            _audited_fit(Misbehaves(event, action, frozenset({WRONG_EVENT_DECLARATION.get(what, "counters")})),
                         tmp_path)


# ---------------------------------------------------------------------------------------- registry entries
def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    cls = TECHNIQUES.get(name)
    assert isinstance(cls, type) and issubclass(cls, Technique)
    assert cls.name == name
    assert cls.__module__ == f"tricklab.techniques.{name}", "one technique = one file named after it"
    assert set(cls.reads) <= SLOTS and set(cls.writes) <= SLOTS
    assert all(isinstance(n, str) for n in (*cls.after, *cls.before, *cls.composes_with))
    assert TECHNIQUES.summary(name), f"{name} needs a docstring (its registry summary)"
    # every on_<x> method is a real event (a typo would silently never run)
    handlers = [m[3:] for m in dir(cls) if m.startswith("on_") and callable(getattr(cls, m))]
    assert set(handlers) <= set(EVENTS), sorted(set(handlers) - set(EVENTS))
    assert handlers, f"{name} handles no event"


@pytest.mark.parametrize("name", NAMES)
def test_docs_page(name: str) -> None:
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"missing docs page {page}"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# ")
    for section in ("## The problem", "## The fix", "## Math", "## References", "## In any loop",
                    "## In a recipe", "## What it declares"):
        assert section in text, f"{page.name} lacks the section {section!r}"
    if name in RUNNER_OWNED:
        assert "refused" in text  # says which recipe key configures it instead
    else:
        assert f"name: {name}" in text  # the recipe snippet names it
    # a measured card exists -> the page links it (Evidence)
    cards = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs" / "cards").glob(f"*/{name}.md"))
    for card in cards:
        assert f"../{card.as_posix()}" in text, f"{page.name} does not link its card docs/{card.as_posix()}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_on_a_fresh_instance(name: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name and c.build is None)
    technique = TECHNIQUES.get(name)(**case.round_trip_args(tmp_path)) if case.round_trip_args else \
        _technique(case, tmp_path)
    plan([technique])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    model: nn.Module = nn.Sequential(nn.Linear(4, 3)) if case.container else nn.Linear(4, 3)
    if case.any_size:  # (B, L) signals of any length: pool the length to 4 first
        model = nn.Sequential(nn.Unflatten(1, (1, -1)), nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(4, 3))
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[technique], max_steps=4, eval_data=(x, y), eval_every=2).fit()
    sd = technique.state_dict()
    assert isinstance(sd, dict)
    fresh = TECHNIQUES.get(name)(**case.round_trip_args(tmp_path)) if case.round_trip_args else \
        _technique(case, tmp_path)
    fresh.load_state_dict(sd)
    assert _equal(fresh.state_dict(), sd)
    # the state survives the checkpoint format (safetensors + JSON, no pickle)
    assert _equal(unflatten_state(*flatten_state(sd)), sd)


# ------------------------------------------------------------------------------------------------- naming
#: how a word of a registry name is spelled in a class name (acronyms, and words written as two)
SPELLING = {"ema": "EMA", "swa": "SWA", "sam": "SAM", "lsuv": "LSUV", "lr": "LR", "cutmix": "CutMix",
            "dropblock": "DropBlock", "gce": "GCE", "fixmatch": "FixMatch", "dp": "DP", "sgd": "SGD",
            "qat": "QAT"}


@functools.cache
def public_classes() -> dict[str, list[str]]:
    """Every public top-level class of the package: name -> the modules defining one of that name."""
    out: dict[str, list[str]] = {}
    src = ROOT / "src" / "tricklab"
    for path in sorted(src.rglob("*.py")):
        module = ".".join(path.relative_to(src.parent).with_suffix("").parts)
        if any(part.startswith("_") and part != "__init__" for part in path.relative_to(src).parts):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                out.setdefault(node.name, []).append(module)
    return out


def technique_class_name(name: str, taken: set[str]) -> str:
    """The naming rule (docs/trainer.md): the registry name in CamelCase, and ``Technique`` appended when another
    public class of tricklab already has that name."""
    base = "".join(SPELLING.get(w, w.capitalize()) for w in name.split("_"))
    return base + "Technique" if base in taken else base


def test_no_two_public_classes_share_a_name() -> None:
    shared = {k: v for k, v in public_classes().items() if len(v) > 1}
    assert not shared, shared


@pytest.mark.parametrize("name", NAMES)
def test_technique_class_names_follow_the_rule(name: str) -> None:
    cls = TECHNIQUES.get(name)
    others = {k for k, mods in public_classes().items() if any(m != cls.__module__ for m in mods)}
    assert cls.__name__ == technique_class_name(name, others)


def test_the_trainer_page_documents_every_slot_and_technique() -> None:
    text = (ROOT / "docs" / "trainer.md").read_text(encoding="utf-8")
    for slot in SLOTS:
        assert f"| `{slot}` |" in text, f"docs/trainer.md: slot {slot!r} missing from the slot table"
    for name, cls in TECHNIQUES.items():
        assert f"| `{name}` | `{cls.__name__}` |" in text, f"docs/trainer.md: {name!r} missing"
