"""The one training loop. It reads top to bottom; techniques plug in at the events of ``events.py``.

Nothing here is a feature flag: mixed precision, accumulation, clipping, EMA, checkpointing, logging and
progress are techniques (``tricklab.techniques``) that set the knobs in :class:`TrainState` or act at events.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data.loader import epoch_permutation
from tricklab.errors import CheckpointError, ConfigError
from tricklab.train import distributed
from tricklab.train.checkpoint import load_checkpoint, load_latest
from tricklab.train.reproducibility import get_rng_state, set_rng_state
from tricklab.train.state import TrainState
from tricklab.train.technique import Plan, Technique, instance_names, plan

MetricFn = Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]


def default_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Loss and accuracy of classification logits (the trainer's default evaluation)."""
    return {
        "loss": float(F.cross_entropy(logits.float(), targets)),
        "accuracy": float((logits.argmax(-1) == targets).float().mean()),
    }


def _scalars(d: dict[str, Any]) -> dict[str, float | int]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Trainer:
    """Train ``model`` with ``optimizer`` on batches from ``loader`` until the budget is spent.

    Args:
        loader: an object with the position API of ``tricklab.data.loader.InMemoryLoader`` (``epoch``,
            ``batch_index``, ``len()``, ``next_batch()``, ``start_next_epoch()``, ``state_dict()``).
        eval_data: (inputs, targets) evaluated every ``eval_every`` steps, or at each epoch end when
            ``eval_every`` is None; skipped when None. With ``predict_fn`` it may be any object (a graph).
        predict_fn: ``(model, data) -> (logits, targets)`` for data that cannot be sliced into batches (a
            graph with a node mask); by default ``data`` is (inputs, targets) evaluated in batches.
        max_steps / max_epochs / max_seconds: the budget; training stops at the first one reached.
        log_every: steps between metric rows (train loss averaged over them).
        trace: record (step, event, technique) for every handler call in ``self.trace``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: Any,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        techniques: Sequence[Technique] = (),
        eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        eval_every: int | None = None,
        eval_batch_size: int = 1000,
        metric_fn: MetricFn = default_metrics,
        predict_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        max_steps: int | None = None,
        max_epochs: int | None = None,
        max_seconds: float | None = None,
        log_every: int = 50,
        device: str | torch.device = "cpu",
        run_dir: str | Path | None = None,
        rank: int = 0,
        world_size: int = 1,
        trace: bool = False,
    ) -> None:
        _check_budget(loader, max_steps, max_epochs, max_seconds, log_every, eval_every)
        self.techniques = list(techniques)
        self.plan: Plan = plan(self.techniques)  # refuses conflicts before anything runs
        if world_size > 1:
            # file writers and the progress display run on rank 0 only
            keep = [rank == 0 or not t.main_process_only for t in self.techniques]
            self._active = [t for t, k in zip(self.techniques, keep) if k]
            self.plan = plan(self._active)
        else:
            self._active = self.techniques
        self.loader = loader
        self.eval_data = eval_data
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        self.metric_fn = metric_fn
        self.predict_fn = predict_fn
        self.log_every = log_every
        self.state = TrainState(
            model=model, optimizer=optimizer, loss_fn=loss_fn, device=torch.device(device),
            run_dir=Path(run_dir) if run_dir is not None else None, rank=rank, world_size=world_size,
            max_steps=max_steps, max_epochs=max_epochs, max_seconds=max_seconds, batches_per_epoch=len(loader),
            forward_backward=self.forward_backward, snapshot=self.state_dict,
            train_batches=lambda n: fixed_batches(self.loader, n),
        )
        self.tracing = trace
        self.trace: list[tuple[int, str, str]] = []
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._resumed_mid_epoch = False

    # ------------------------------------------------------------------------------------------ events
    def emit(self, event: str) -> list[Any]:
        """Run every handler of ``event`` in the planned order; returns their results."""
        handlers = self.plan.handlers[event]
        if not handlers:
            return []
        s = self.state
        out = []
        for name, fn in handlers:
            if self.tracing:
                self.trace.append((s.step, event, name))
            out.append(fn(s))
        return out

    def technique(self, name: str) -> Technique:
        """The technique instance called ``name`` (as in the plan's names)."""
        for n, t in zip(instance_names(self.techniques), self.techniques):
            if n == name:
                return t
        raise KeyError(name)

    # ------------------------------------------------------------------------------------------ budget
    def _done(self) -> bool:
        s = self.state
        if (s.max_steps is not None and s.step >= s.max_steps) or (
                s.max_epochs is not None and s.epoch >= s.max_epochs):
            return True  # identical on every rank
        local = s.should_stop or (s.max_seconds is not None and s.train_seconds >= s.max_seconds)
        if s.world_size > 1:
            # wall-clock budgets and stop requests can differ between ranks; a rank that stops alone would
            # leave the others waiting forever in the gradient all-reduce, so all stop when any does
            return distributed.any_rank(local)
        return local

    # -------------------------------------------------------------------------------------------- fit
    def fit(self, resume_from: str | Path | None = None) -> TrainState:
        """Train until the budget is spent; with ``resume_from`` (a checkpoint file or folder) continue
        exactly where that checkpoint left off."""
        s = self.state
        s.model.train()
        self.emit("fit_start")
        if resume_from is not None:
            self.resume(resume_from)
        loader = self.loader
        while not self._done():
            if loader.batch_index == 0 and not self._resumed_mid_epoch:
                self.emit("epoch_start")
            self._resumed_mid_epoch = False
            while loader.batch_index < len(loader) and not self._done():
                t0 = time.perf_counter()
                self._micro_batch(*loader.next_batch())
                stepped = s.micro_step % s.accum_steps == 0
                if stepped:
                    self._optimizer_step()
                s.train_seconds += time.perf_counter() - t0
                if stepped:
                    self._after_step_bookkeeping()
            if loader.batch_index >= len(loader):
                if self.eval_every is None and self.eval_data is not None:
                    self.run_eval()
                self.emit("epoch_end")
                loader.start_next_epoch()
                s.epoch = loader.epoch
        last = s.history[-1] if s.history else {}
        evaluated_now = last.get("step") == s.step and any(k.startswith("eval_") for k in last)
        if self.eval_data is not None and not evaluated_now:
            self.run_eval()  # every run ends with an evaluated row: curves and equal-time comparisons need it
        self.emit("fit_end")
        return s

    def _forward_loss(self) -> torch.Tensor:
        """Forward (inside the ``forward`` contexts) and loss (with the ``loss`` handlers) on the current batch."""
        s = self.state
        contexts = self.emit("forward")
        with contextlib.ExitStack() as stack:
            for ctx in contexts:
                if ctx is not None:
                    stack.enter_context(ctx)
            s.outputs = s.model(s.inputs)
            s.loss = s.loss_fn(s.outputs, s.targets)
            self.emit("loss")
        loss = s.loss
        if loss is None or loss.ndim != 0:
            raise ConfigError(f"the loss must be a scalar tensor, got {None if loss is None else tuple(loss.shape)}")
        return loss

    def _micro_batch(self, inputs: Any, targets: Any) -> None:
        s = self.state
        s.inputs = _to_device(inputs, s.device)
        s.targets = _to_device(targets, s.device)
        self.emit("batch_start")
        loss = self._forward_loss()
        boundary = (s.micro_step + 1) % s.accum_steps == 0
        # DDP: skip the gradient all-reduce on all but the last micro-batch of an accumulation window
        sync = s.model.no_sync() if (not boundary and hasattr(s.model, "no_sync")) else contextlib.nullcontext()
        with sync:
            scale = s.grad_scale / s.accum_steps
            (loss * scale if scale != 1.0 else loss).backward()
        s.micro_step += 1
        d = loss.detach().float()
        self._loss_sum = d if self._loss_sum is None else self._loss_sum + d
        self._loss_count += 1

    def forward_backward(self) -> torch.Tensor:
        """Run forward, loss and backward again on the current batch, for two-pass techniques (SAM).

        Gradients accumulate into ``.grad`` (zero them first for fresh ones) and are unscaled before return,
        like the ones ``after_backward`` sees. Only valid without gradient accumulation (the current batch is
        the whole optimizer step). Returns the loss (detached)."""
        s = self.state
        if s.accum_steps != 1:
            raise ConfigError("a second forward/backward pass (e.g. SAM) needs grad_accumulation steps = 1")
        loss = self._forward_loss()
        (loss * s.grad_scale if s.grad_scale != 1.0 else loss).backward()
        _unscale(s)
        return loss.detach()

    def _optimizer_step(self) -> None:
        s = self.state
        _unscale(s)
        self.emit("after_backward")
        self.emit("before_step")
        if not s.skip_step:
            s.optimizer.step()
        s.step += 1
        self.emit("after_step")
        s.optimizer.zero_grad(set_to_none=True)
        s.skip_step = False

    def _after_step_bookkeeping(self) -> None:
        s = self.state
        evaluated = False
        if self.eval_every is not None and self.eval_data is not None and s.step % self.eval_every == 0:
            self.run_eval(log=False)
            evaluated = True
        if s.step % self.log_every == 0 or evaluated:
            self._log(with_eval=evaluated)
        self.emit("checkpoint_save")

    def _log(self, with_eval: bool) -> None:
        s = self.state
        row: dict[str, Any] = {"step": s.step, "epoch": s.epoch, "seconds": round(s.train_seconds, 6),
                               "lr": s.lr}
        if self._loss_count and s.world_size > 1:
            # every rank logs at the same steps: average the ranks' losses so the row covers the global batch
            self._loss_sum = distributed.mean_over_ranks(self._loss_sum)
        if self._loss_count:
            row["train_loss"] = float(self._loss_sum) / self._loss_count  # one sync per log row
            self._loss_sum, self._loss_count = None, 0
        if with_eval:
            row.update({f"eval_{k}": v for k, v in _scalars(s.eval_metrics).items()})
        s.history.append(row)
        self.emit("log")

    # ----------------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits of the current model (whatever weights are loaded) on ``inputs``, in eval mode."""
        s = self.state
        model = s.raw_model
        was_training = model.training
        model.eval()
        bs = batch_size or self.eval_batch_size
        try:
            outs = [model(_to_device(inputs[i : i + bs], s.device)).float().cpu() for i in range(0, len(inputs), bs)]
        finally:
            model.train(was_training)
        return torch.cat(outs)

    def evaluate(self, data: Any) -> dict[str, Any]:
        """Metrics on ``data`` with the evaluation weights (techniques swap them in at eval_start)."""
        s = self.state
        self.emit("eval_start")
        metrics: dict[str, Any] = {}
        try:
            metrics = self.evaluate_trained_weights(data)
        finally:
            s.eval_metrics = metrics
            self.emit("eval_end")
        return metrics

    def evaluate_trained_weights(self, data: Any) -> dict[str, Any]:
        """Metrics on ``data`` with whatever weights the model holds now, firing no event: with a weight
        averager this measures the trained (final) weights beside the averaged ones of ``evaluate``."""
        s = self.state
        if self.predict_fn is not None:
            model = s.raw_model
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    logits, targets = self.predict_fn(model, _to_device(data, s.device))
            finally:
                model.train(was_training)
            return self.metric_fn(logits.float().cpu(), targets.cpu())
        return self.metric_fn(self.predict(data[0]), data[1].cpu())

    def run_eval(self, log: bool = True) -> dict[str, Any]:
        assert self.eval_data is not None
        metrics = self.evaluate(self.eval_data)
        if log:
            self._log(with_eval=True)
        return metrics

    # ------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: counters, model, optimizer, techniques, RNGs, loader."""
        s = self.state
        active_names = instance_names(self._active)
        return {
            "step": s.step, "micro_step": s.micro_step, "epoch": s.epoch,
            "train_seconds": s.train_seconds, "history": s.history, "counters": dict(s.counters),
            "model": s.raw_model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "techniques": {n: t.state_dict() for n, t in zip(active_names, self._active)},
            "rng": get_rng_state(),
            "loader": self.loader.state_dict(),
            # the running train-loss sum since the last log row, so the resumed row averages the same terms
            "loss_sum": self._loss_sum, "loss_count": self._loss_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = self.state
        active_names = instance_names(self._active)
        saved = state["techniques"]
        missing = [n for n in active_names if n not in saved]
        if missing:
            raise CheckpointError(
                f"the checkpoint has no state for technique(s) {missing}: it was written by a run with "
                f"techniques {sorted(saved)}; resume with the same recipe"
            )
        s.raw_model.load_state_dict(state["model"])
        s.optimizer.load_state_dict(state["optimizer"])
        for n, t in zip(active_names, self._active):
            t.load_state_dict(saved[n])
        self.loader.load_state_dict(state["loader"])
        s.step, s.micro_step, s.epoch = int(state["step"]), int(state["micro_step"]), int(state["epoch"])
        s.train_seconds = float(state["train_seconds"])
        s.history = list(state["history"])
        s.counters = dict(state["counters"])
        set_rng_state(state["rng"])
        self._loss_sum, self._loss_count = state["loss_sum"], int(state["loss_count"])
        self._resumed_mid_epoch = self.loader.batch_index > 0

    def resume(self, path: str | Path) -> Path:
        """Load a checkpoint file, or the newest valid one in a folder, then fire ``checkpoint_load``."""
        path = Path(path)
        if path.is_dir():
            found = load_latest(path, warn=self._warn)
            if found is None:
                raise CheckpointError(f"no valid checkpoint in {path}")
            used, state = found
        else:
            used, state = path, load_checkpoint(path)
        self.load_state_dict(state)
        self.state.resumed_from = str(used)
        if self.state.is_main:
            self._say(f"resumed at step {self.state.step} (epoch {self.state.epoch}) from {used}")
        self.emit("checkpoint_load")
        return used

    def _warn(self, message: str) -> None:
        self._say(f"warning: {message}")

    def _say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def _check_budget(loader: Any, max_steps: int | None, max_epochs: int | None, max_seconds: float | None,
                  log_every: int, eval_every: int | None) -> None:
    if max_steps is None and max_epochs is None and max_seconds is None:
        raise ConfigError("the trainer needs a budget: set max_steps, max_epochs or max_seconds")
    for label, v in (("max_steps", max_steps), ("max_epochs", max_epochs), ("log_every", log_every),
                     ("eval_every", eval_every)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(f"{label} must be a positive integer, got {v!r}")
    if len(loader) < 1:
        raise ConfigError("the training loader yields no batch per epoch (data set smaller than the batch?)")


def _unscale(s: TrainState) -> None:
    """Dynamic loss scaling: the gradients hold scale * dL/dw; after_backward promises unscaled ones."""
    if s.grad_scale != 1.0:
        grads = s.grads()
        if grads:
            torch._foreach_mul_(grads, 1.0 / s.grad_scale)


def fixed_batches(loader: Any, n: int | None) -> list[torch.Tensor]:
    """Up to ``n`` training input batches (all when None) in a fixed order, the loader's epoch-0 permutation,
    read without moving the loader's position (``TrainState.train_batches``)."""
    if not all(hasattr(loader, a) for a in ("inputs", "batch_size", "seed")):
        raise ConfigError("this technique reads training batches from an in-memory training loader "
                          "(tricklab.data.InMemoryLoader); with another loader, e.g. for SWA, call "
                          "tricklab.techniques.swa.recompute_bn_ yourself")
    x = loader.inputs
    bs = loader.batch_size
    perm = epoch_permutation(len(x), loader.seed, 0)
    count = len(perm) // bs if n is None else min(n, max(len(perm) // bs, 1))
    return [x.index_select(0, perm[i * bs:(i + 1) * bs].to(x.device)) for i in range(count)]


def _to_device(x: Any, device: torch.device) -> Any:
    if hasattr(x, "to") and not isinstance(x, (torch.Tensor, nn.Module)) and hasattr(x, "edge_index"):
        return x if x.device == device else x.to(device)  # a tricklab Graph
    if isinstance(x, torch.Tensor):
        return x if x.device == device else x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x
