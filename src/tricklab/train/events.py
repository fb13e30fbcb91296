"""The trainer's events, in the order they fire, and the state slots techniques declare.

A technique handles an event by defining ``on_<event>(self, state)``. The table below is the contract the
trainer keeps; tests in tests/train/test_trainer.py check it, and tests/contracts/test_techniques.py checks
that every handler writes only the slots its technique declares.

=================  ==========================================================================================
event              state at that moment
=================  ==========================================================================================
fit_start          model built and seeded, optimizer built, nothing trained; ``batches_per_epoch``,
                   ``forward_backward``, ``snapshot`` and ``train_batches`` are set. Runs before a checkpoint is
                   loaded, so a technique sets up here (the owner of ``accum_steps`` / ``loss_scale`` sets it)
                   and ``checkpoint_load`` then overwrites its state.
checkpoint_load    only on resume: every state (model, optimizer, techniques, RNGs, loader position) restored;
                   ``resumed_from`` names the checkpoint file.
epoch_start        ``state.epoch`` is the epoch about to run; the loader is at batch 0. Not fired again when a
                   run resumes in the middle of an epoch.
batch_start        ``state.inputs`` / ``state.targets`` hold the batch on the device. A technique may replace
                   them, stage by stage: geometric transforms, erasing, mixing (mixup writes ``batch.targets``
                   as soft targets); readers of ``batch.inputs`` see the inputs the model will get.
forward            may return a context manager that wraps the model call and the loss (autocast). It runs
                   once per micro-batch (and again for a second pass, SAM).
loss               ``state.outputs`` and ``state.loss`` (a scalar tensor with grad) are set. A technique may
                   replace the loss (``loss_fn``) or add to it (``loss``). Backward then runs on
                   ``state.loss * state.grad_scale / state.accum_steps``.
after_backward     fires once per optimizer step, after the last micro-batch's backward: gradients are
                   complete (summed over micro-batches, averaged over DDP ranks) and unscaled (the trainer
                   divides them by ``grad_scale`` first): stage ``grads.raw``. Handlers run along the gradient
                   stages: checks of the raw gradients (loss scaler), recomputation (SAM), transforms
                   (centralization), clipping, then readers of the final ``grads`` (NaN guard).
before_step        gradients final; a technique may set ``state.skip_step`` or change the learning rate.
after_step         the optimizer has stepped (unless skipped); ``state.step`` already counts this step;
                   gradients not yet zeroed; ``skip_step`` still says whether the step was skipped. EMA
                   updates here. The trainer then zeroes the gradients and clears ``skip_step``.
eval_start         about to evaluate; a technique may swap in evaluation weights (EMA, SWA).
eval_end           ``state.eval_metrics`` holds the new metrics, computed with the evaluation weights; a
                   technique must restore weights it swapped (readers of ``eval_weights`` run before it).
log                ``state.history[-1]`` is a new metrics row (train loss, lr, eval metrics when just run); a
                   technique may add keys to it (grad_clip adds ``grad_norm``).
epoch_end          the epoch's last batch is done (and its evaluation, when evaluating per epoch).
checkpoint_save    end of every optimizer step, after its evaluation and log row (gradients zeroed): all
                   state needed to resume is consistent (``state.snapshot()``); the checkpointing technique
                   writes here. A resumed run replays from this point, including a pending epoch end.
fit_end            training finished (budget, early stop or error-free stop); final evaluation follows.
=================  ==========================================================================================

Slots
-----
``SLOT_TABLE`` names every piece of state a technique may read or write: what it is, the TrainState field(s)
or object behind it, whether it is exclusive (one owner per run), at which events it may be written (a write at
another event is a contract violation), and why. Three *pipelines* order the stages of one value:
:data:`PIPELINES`; see ``tricklab.train.technique`` for how the run order is derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENTS: tuple[str, ...] = (
    "fit_start",
    "checkpoint_load",
    "epoch_start",
    "batch_start",
    "forward",
    "loss",
    "after_backward",
    "before_step",
    "after_step",
    "eval_start",
    "eval_end",
    "log",
    "epoch_end",
    "checkpoint_save",
    "fit_end",
)


@dataclass(frozen=True)
class Slot:
    """One named piece of state in the contract."""

    name: str
    fields: str  # the TrainState field(s) or object it names
    meaning: str
    exclusive: bool = False
    why: str = ""  # why it is exclusive, or why several writers can share it
    #: the events at which it may be written (None: any); a slot orders two handlers only at these events
    written_at: frozenset[str] | None = None
    #: events at which writing it *ends* its value (an averager swaps the trained weights back at eval_end):
    #: there, its readers run before its writers
    teardown: frozenset[str] = frozenset()


_BATCH = frozenset({"batch_start"})
_LOSS = frozenset({"loss", "after_backward"})  # after_backward: a second forward/backward pass (SAM)
_GRADS = frozenset({"after_backward"})

SLOT_TABLE: tuple[Slot, ...] = (
    # --------------------------------------------------------------------------------- the batch (stages)
    Slot("batch.inputs.geometric", "state.inputs", "per-example geometric transforms of the inputs (flip, "
         "shift)", why="transforms compose: several may run, one after another", written_at=_BATCH),
    Slot("batch.inputs.erased", "state.inputs", "per-example erasing of part of each input (cutout, random "
         "erasing), on the transformed geometry", why="composable like the geometric transforms",
         written_at=_BATCH),
    Slot("batch.inputs.mixed", "state.inputs", "inputs mixed across examples of the batch (mixup, cutmix)",
         why="mixers also own batch.targets, which is where two of them conflict", written_at=_BATCH),
    Slot("batch.inputs", "state.inputs", "the inputs as the model will get them (after every input stage)",
         why="read by techniques that need the batch (LSUV, the second pass of SAM)", written_at=_BATCH),
    Slot("batch.targets", "state.targets", "the targets (a mixer makes them soft (B, C) targets)",
         exclusive=True, why="two target mixers would mix already-mixed targets", written_at=_BATCH),
    Slot("batch.outputs", "state.outputs", "the model's outputs on the batch", why="only a second pass "
         "rewrites them", written_at=_LOSS),
    # ------------------------------------------------------------------------------------ the loss (stages)
    Slot("loss_fn", "state.loss", "the loss replaced by another function of outputs and targets (label "
         "smoothing, focal, bootstrapping)", exclusive=True,
         why="two techniques that each replace the task loss would silently overwrite each other",
         written_at=_LOSS),
    Slot("loss", "state.loss", "the loss value, transformed or added to (a weight penalty)",
         why="terms add up; a term is added to whatever loss function is in force", written_at=_LOSS),
    # ------------------------------------------------------------------------------- the gradients (stages)
    Slot("grads.raw", "p.grad of the optimizer's parameters", "the gradients as backward left them: "
         "complete, unscaled, averaged over ranks", why="only the trainer writes them; checks read them",
         written_at=_GRADS),
    Slot("grads.recomputed", "p.grad", "gradients replaced by a new backward pass (SAM: at the perturbed "
         "weights)", why="stages: a recomputation discards what came before it, so it runs first",
         written_at=_GRADS),
    Slot("grads.transformed", "p.grad", "gradients transformed in place (centralization)",
         why="transforms compose", written_at=_GRADS),
    Slot("grads.clipped", "p.grad", "gradients clipped by norm or value",
         why="clipping bounds whatever the transforms produced, so it comes after them", written_at=_GRADS),
    Slot("grads", "p.grad", "the gradients the optimizer step will use (after every stage)",
         why="read by checks of the final update (NaN guard)", written_at=_GRADS),
    # ------------------------------------------------------------------------------------------- the step
    Slot("skip_step", "state.skip_step", "the flag that skips this optimizer step",
         why="a shared flag: the loss scaler and the NaN guard may each set it; any one skips the step",
         written_at=frozenset({"after_backward", "before_step"})),
    Slot("loss_scale", "state.grad_scale", "the dynamic loss scale: backward runs on loss * scale and the "
         "gradients are divided by it", exclusive=True,
         why="two loss scalers would each rescale and unscale: the gradients would be off by a factor",
         written_at=frozenset({"fit_start", "after_backward", "checkpoint_load"})),
    Slot("accum_steps", "state.accum_steps", "micro-batches per optimizer step (gradient accumulation)",
         exclusive=True, why="two owners would each set their own count; the last one would silently win",
         written_at=frozenset({"fit_start"})),
    Slot("optimizer", "state.optimizer (its state and the step itself)", "the optimizer's state and how the "
         "step is taken", exclusive=True, why="two techniques taking over the step (SAM) would each step"),
    Slot("lr", "every param group's 'lr'", "the learning rate", exclusive=True,
         why="two schedule owners would overwrite each other"),
    Slot("params", "the model's parameter values", "the trained weights",
         why="several techniques may set weights (init, restoring the best)"),
    Slot("norm_stats", "the model's buffers (BatchNorm running statistics)", "normalisation statistics",
         why="recomputed or restored with the weights"),
    Slot("model.structure", "the module tree and module configuration (e.g. DropBlock.drop_prob)",
         "how the model's forward computes", why="configuration changes compose"),
    Slot("rng", "the global RNGs (Python, NumPy, torch CPU and CUDA)", "random streams a technique draws from "
         "(an init, a second pass with dropout)", why="draws are sequential, not owned"),
    # ------------------------------------------------------------------------------- evaluation and output
    Slot("eval_weights", "the model's parameters and buffers between eval_start and eval_end",
         "the weights evaluation uses (averaged weights swapped in)", exclusive=True,
         why="two weight averagers would each swap their own weights in",
         written_at=frozenset({"eval_start", "eval_end"}), teardown=frozenset({"eval_end"})),
    Slot("eval_metrics", "state.eval_metrics", "the metrics of the evaluation that just ran",
         why="the trainer computes them; techniques read them", written_at=frozenset({"eval_end"})),
    Slot("stop", "state.should_stop, state.stop_reason", "the request to stop training, with its reason",
         why="a shared flag: any technique may ask to stop"),
    Slot("log_row", "state.history[-1]", "the metrics row just logged", why="techniques add their own keys",
         written_at=frozenset({"log"})),
    Slot("counters", "state.counters", "named event counts (e.g. skipped non-finite steps)",
         why="each technique counts under its own key"),
)

#: Slot name -> its table entry.
SLOT_INFO: dict[str, Slot] = {s.name: s for s in SLOT_TABLE}

#: State slots a technique may declare in ``reads`` / ``writes``.
SLOTS: frozenset[str] = frozenset(SLOT_INFO)

#: Slots with one owner: two techniques writing one of these conflict unless one composes with the other.
EXCLUSIVE_SLOTS: frozenset[str] = frozenset(s.name for s in SLOT_TABLE if s.exclusive)

#: Ordered stages of one value. A writer of a stage runs before every technique that touches a later stage;
#: a reader of a stage runs after its writers and before any writer of a later stage (which would overwrite
#: what it reads). The last stage of each names the value as the next step uses it.
PIPELINES: tuple[tuple[str, ...], ...] = (
    ("batch.inputs.geometric", "batch.inputs.erased", "batch.inputs.mixed", "batch.inputs"),
    ("loss_fn", "loss"),
    ("grads.raw", "grads.recomputed", "grads.transformed", "grads.clipped", "grads"),
)

#: Every slot that holds gradients (a handler that changes p.grad must write one of these).
GRAD_SLOTS: frozenset[str] = frozenset(PIPELINES[2])
#: Every slot that holds the inputs (a handler that changes state.inputs must write one of these).
INPUT_SLOTS: frozenset[str] = frozenset(PIPELINES[0])


def writable_at(slot: str, event: str) -> bool:
    """Whether ``slot`` may be written at ``event`` (see :class:`Slot`)."""
    events = SLOT_INFO[slot].written_at
    return events is None or event in events
