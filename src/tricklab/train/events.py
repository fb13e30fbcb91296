"""The trainer's events, in the order they fire, and what the state holds at each.

A technique handles an event by defining ``on_<event>(self, state)``. The table below is the contract the
trainer keeps; tests in tests/train/test_trainer.py check it.

=================  ==========================================================================================
event              state at that moment
=================  ==========================================================================================
fit_start          model built and seeded, optimizer built, nothing trained; runs before a checkpoint is
                   loaded, so a technique sets up here and ``checkpoint_load`` then overwrites its state.
checkpoint_load    only on resume: every state (model, optimizer, techniques, RNGs, loader position) restored.
epoch_start        ``state.epoch`` is the epoch about to run; the loader is at batch 0. Not fired again when a
                   run resumes in the middle of an epoch.
batch_start        ``state.inputs`` / ``state.targets`` hold the batch on the device. A technique may replace
                   them (mixup writes ``batch.targets`` as soft targets).
forward            may return a context manager that wraps the model call and the loss (autocast). It runs
                   once per micro-batch.
loss               ``state.outputs`` and ``state.loss`` (a scalar tensor with grad) are set. A technique may
                   transform or add to the loss. Backward then runs on
                   ``state.loss * state.grad_scale / state.accum_steps``.
after_backward     fires once per optimizer step, after the last micro-batch's backward: gradients are
                   complete (summed over micro-batches, averaged over DDP ranks) and unscaled (the loss scaler
                   unscales first). Clipping and the NaN guard act here.
before_step        gradients final; a technique may set ``state.skip_step`` or change the learning rate.
after_step         the optimizer has stepped (unless skipped); ``state.step`` already counts this step;
                   gradients not yet zeroed. EMA updates here.
eval_start         about to evaluate; a technique may swap in evaluation weights (EMA, SWA).
eval_end           ``state.eval_metrics`` holds the new metrics; a technique must restore weights it swapped.
log                ``state.history[-1]`` is a new metrics row (train loss, lr, eval metrics when just run).
epoch_end          the epoch's last batch is done (and its evaluation, when evaluating per epoch).
checkpoint_save    end of every optimizer step, after its evaluation and log row (gradients zeroed): all
                   state needed to resume is consistent; the checkpointing technique writes here. A resumed
                   run replays from this point, including a pending epoch end.
fit_end            training finished (budget, early stop or error-free stop); final evaluation follows.
=================  ==========================================================================================
"""

from __future__ import annotations

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

#: State slots a technique may declare in ``reads`` / ``writes``.
SLOTS: frozenset[str] = frozenset(
    {
        "batch.inputs",
        "batch.targets",
        "loss",
        "loss_fn",
        "grads",
        "params",
        "optimizer",
        "lr",
        "model.structure",
        "eval_weights",
        "norm_stats",
        "rng",
    }
)

#: Slots with one owner: two techniques writing one of these conflict unless one composes with the other.
#: batch.targets: two target mixers would mix already-mixed targets; eval_weights: two weight averagers would
#: each swap their own weights in; lr: two schedule owners would overwrite each other; optimizer: two
#: techniques that take over the optimizer step (loss scaler, SAM) would each step; loss_fn: two techniques that
#: each replace the task loss (label smoothing, focal, bootstrapping) would silently overwrite each other (a
#: technique that only adds a term, such as a weight penalty, writes ``loss`` instead).
EXCLUSIVE_SLOTS: frozenset[str] = frozenset({"batch.targets", "eval_weights", "lr", "loss_fn", "optimizer"})
