"""BERT's variants as configurations of our BERT (:mod:`tricklab.models.bert`), pre-trained on Shakespeare's
characters with the masked-LM objective and then fine-tuned on the plays task (which play a passage is from).

* ``bert``: static masking (each training window is masked once, before training, and the same masked copy is
  seen every epoch: Devlin et al. 2019 duplicated the data 10 times with different masks; at our budgets one
  mask is the honest static case).
* ``roberta``: dynamic masking (Liu et al. 2019, sec. 4.1): a fresh mask is drawn every time a window is put in a
  batch. RoBERTa's other changes do not apply or are a budget choice: our BERT has no next-sentence objective to
  drop, and larger batches are ``batch_size`` (equal here so that the comparison isolates the masking).
* ``albert``: factorized embedding ``V x E`` then ``E x H`` and one Transformer block shared by all layers (Lan et
  al. 2020, sec. 3.1); sentence-order prediction is left out with the sentence objective it replaces.
* ``distilbert``: half the teacher's layers, initialised from every other teacher layer
  (:func:`tricklab.models.bert.distil_student`), trained with dynamic masking on (Sanh et al. 2019, sec. 3)

      L = a_ce T^2 KL(softmax(t / T) || softmax(s / T)) + a_mlm CE(s, y) + a_cos (1 - cos(h_s, h_t))

  where s, t are the student's and teacher's MLM logits at every position, y the masked tokens, h the last hidden
  states, and (a_ce, a_mlm, a_cos, T) = (5, 2, 1, 2) as in the authors' training script.

Masked-LM accuracy is measured on the held-out last 10% of the text with one static mask (a fixed seed, the same
for every variant and seed, so the numbers are paired); the plays accuracy after fine-tuning the pre-trained
encoder with mean pooling and a linear head.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data.datasets.text import IGNORE_INDEX, load_shakespeare_char, load_shakespeare_plays, mlm_mask
from tricklab.errors import ConfigError
from tricklab.losses.distillation import distillation_loss
from tricklab.models.bert import BertClassifier, BertEncoder, BertMLM, distil_student
from tricklab.paradigms.generative.result import ParadigmResult, write_result

__all__ = [
    "VARIANTS",
    "BertVariantConfig",
    "DistilLoss",
    "MLMBatcher",
    "build_variant",
    "distilbert_loss",
    "mlm_accuracy",
    "run_bert_variant",
]

VARIANTS = ("bert", "roberta", "albert", "distilbert")
EVAL_MASK_SEED = 12345  # the held-out mask: one for every variant and seed, so their accuracies are paired


class MLMBatcher:
    """Masked-LM batches of clean windows (N, T), with static or dynamic masking (:func:`mlm_mask`'s 80/10/10).

    Static: every window is masked once here, from ``seed``, and :meth:`batch` returns the same masked copy each
    time the window is drawn. Dynamic (RoBERTa): :meth:`batch` draws a new mask from a generator seeded with
    ``seed`` every time it is called, so a window seen in two epochs gets two masks.
    """

    def __init__(self, windows: Tensor, mask_prob: float, mask_id: int, vocab_size: int, *, dynamic: bool,
                 seed: int) -> None:
        if windows.dim() != 2 or windows.dtype != torch.int64:
            raise ValueError(f"MLMBatcher needs (N, T) int64 windows, got {windows.dtype} {tuple(windows.shape)}")
        self.windows, self.mask_prob, self.mask_id, self.vocab_size = windows, mask_prob, mask_id, vocab_size
        self.dynamic = bool(dynamic)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.static = None if self.dynamic else mlm_mask(windows, mask_prob, mask_id, vocab_size, self.gen)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(inputs, targets) of the windows ``idx`` (B,): targets are the original ids at masked positions, -100
        elsewhere."""
        if self.static is not None:
            return self.static[0][idx], self.static[1][idx]
        return mlm_mask(self.windows[idx], self.mask_prob, self.mask_id, self.vocab_size, self.gen)


class DistilLoss(NamedTuple):
    """:func:`distilbert_loss`'s total and its three parts (unweighted), for logging."""

    loss: Tensor
    soft: Tensor  # T^2 KL(teacher_T || student_T), mean over positions
    mlm: Tensor  # cross-entropy at the masked positions
    cos: Tensor  # mean (1 - cos) between the hidden states


def distilbert_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, student_hidden: Tensor,
                    teacher_hidden: Tensor, temperature: float = 2.0, alpha_ce: float = 5.0, alpha_mlm: float = 2.0,
                    alpha_cos: float = 1.0, key_padding_mask: Tensor | None = None) -> DistilLoss:
    """DistilBERT's triple loss (Sanh et al. 2019, sec. 3), see the module docstring.

    Shapes: logits (B, T, V); targets (B, T) with -100 where nothing is predicted; hidden (B, T, H). The soft
    term and the cosine term average over the non-padding positions (all of them when ``key_padding_mask`` is
    None: the authors' default, not only the masked ones); the teacher's tensors are detached.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student hidden {tuple(student_hidden.shape)} and teacher hidden "
                         f"{tuple(teacher_hidden.shape)} must have the same shape (the same d_model)")
    keep = (torch.ones(targets.shape, dtype=torch.bool, device=targets.device) if key_padding_mask is None
            else ~key_padding_mask)
    v = student_logits.shape[-1]
    soft = distillation_loss(student_logits[keep].reshape(-1, v), teacher_logits[keep].reshape(-1, v).detach(),
                             temperature=temperature, alpha=1.0)  # alpha T^2 KL, mean over positions
    mlm = F.cross_entropy(student_logits.reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    cos = (1.0 - F.cosine_similarity(student_hidden[keep], teacher_hidden[keep].detach(), dim=-1)).mean()
    return DistilLoss(alpha_ce * soft + alpha_mlm * mlm + alpha_cos * cos, soft, mlm, cos)


@dataclass
class BertVariantConfig:
    """One variant pre-trained with the masked-LM objective, then fine-tuned on the plays; small CPU budgets.

    ``teacher_file``: for ``distilbert``, the model.safetensors of a ``bert`` run with the same architecture
    (``run_dir/model.safetensors``); without it the teacher is trained here first with the same settings and seed
    (its time is reported apart and not counted as the student's).
    """

    variant: str = "bert"
    block_size: int = 64
    d_model: int = 64
    n_layer: int = 4
    n_heads: int = 4
    d_ff: int | None = None
    embedding_dim: int = 16  # ALBERT's E
    dropout: float = 0.1
    mask_prob: float = 0.15
    max_train_windows: int = 2000
    batch_size: int = 32
    steps: int = 600
    lr: float = 1e-3
    weight_decay: float = 0.01
    eval_windows: int = 1000
    num_plays: int = 8
    finetune_steps: int = 300
    finetune_lr: float = 5e-4
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    teacher_file: str | None = None
    log_every: int = 100
    threads: int = 1
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("block_size", "d_model", "n_layer", "n_heads", "embedding_dim", "max_train_windows",
                     "batch_size", "steps", "eval_windows", "num_plays", "finetune_steps", "log_every", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("lr", "finetune_lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "alpha_ce", "alpha_mlm", "alpha_cos"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.variant == "distilbert" and self.n_layer < 2:
            raise ConfigError("distilbert halves the teacher's n_layer: n_layer must be >= 2")
        if self.teacher_file is not None and not Path(self.teacher_file).is_file():
            raise ConfigError(f"teacher_file {self.teacher_file!r} not found; pass the model.safetensors of a "
                              "'bert' run of this task, or leave it out to train the teacher here")


def build_variant(cfg: BertVariantConfig, vocab_size: int, variant: str | None = None) -> BertMLM:
    """The MLM model of ``variant`` (default ``cfg.variant``); ``distilbert`` builds its teacher's shape (BERT):
    the student is made from a trained teacher by :func:`distil_student`. ``vocab_size`` includes ``[MASK]``."""
    variant = variant or cfg.variant
    albert = variant == "albert"
    enc = BertEncoder(vocab_size, cfg.block_size, cfg.d_model, cfg.n_layer, cfg.n_heads, cfg.dropout, cfg.d_ff,
                      embedding_dim=cfg.embedding_dim if albert else None, share_layers=albert)
    return BertMLM(enc, mask_id=vocab_size - 1)


@torch.no_grad()
def mlm_accuracy(model: BertMLM, inputs: Tensor, targets: Tensor, batch: int = 256) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the predictions at the masked positions (targets != -100)."""
    was = model.training
    model.eval()
    correct, nll, count = 0, 0.0, 0
    for i in range(0, len(inputs), batch):
        logits, y = model(inputs[i : i + batch]), targets[i : i + batch]
        sel = y != IGNORE_INDEX
        correct += int((logits[sel].argmax(-1) == y[sel]).sum())
        nll += float(F.cross_entropy(logits[sel], y[sel], reduction="sum"))
        count += int(sel.sum())
    model.train(was)
    return correct / max(count, 1), nll / max(count, 1)


def _optimizer(model: nn.Module, lr: float, weight_decay: float, steps: int) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # linear decay to zero; pre-LN blocks need no warm-up (Xiong et al. 2020)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    return opt, sched


def _pretrain(model: BertMLM, batcher: MLMBatcher, cfg: BertVariantConfig, gen: torch.Generator,
              teacher: BertMLM | None, eval_xy: tuple[Tensor, Tensor], tag: str,
              progress: Callable[[dict[str, Any]], None] | None) -> tuple[list[dict[str, Any]], float]:
    """``cfg.steps`` AdamW steps over shuffled epochs of the windows; returns (history, CPU seconds)."""
    opt, sched = _optimizer(model, cfg.lr, cfg.weight_decay, cfg.steps)
    n = len(batcher.windows)
    history: list[dict[str, Any]] = []
    order, pos, running = torch.randperm(n, generator=gen), 0, 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model.train()
    for step in range(1, cfg.steps + 1):
        if pos + cfg.batch_size > n:  # a new epoch: reshuffle (drop the last partial batch)
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x, y = batcher.batch(idx)
        if teacher is None:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        else:
            with torch.no_grad():
                t_hidden = teacher.encoder(x)
                t_logits = teacher.head(t_hidden)
            s_hidden = model.encoder(x)
            loss = distilbert_loss(model.head(s_hidden), t_logits, y, s_hidden, t_hidden, cfg.temperature,
                                   cfg.alpha_ce, cfg.alpha_mlm, cfg.alpha_cos).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % cfg.log_every == 0 or step == cfg.steps:
            acc, nll = mlm_accuracy(model, *eval_xy)
            row = {"step": step, "seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
                   "phase": tag, "train_loss": running / (step % cfg.log_every or cfg.log_every),
                   "mlm_accuracy": acc, "mlm_loss": nll}
            running = 0.0
            history.append(row)
            if progress is not None:
                progress(dict(row))
    return history, time.process_time() - cpu0


def _finetune(encoder: BertEncoder, cfg: BertVariantConfig, gen: torch.Generator,
              progress: Callable[[dict[str, Any]], None] | None) -> tuple[float, list[dict[str, Any]], float]:
    """Fine-tune the encoder (all weights) on the plays; returns (test accuracy, history, CPU seconds)."""
    ds = load_shakespeare_plays(cfg.data_dir, passage_len=cfg.block_size, num_plays=cfg.num_plays)
    clf = BertClassifier(encoder, ds.num_classes, pooling="mean", dropout=cfg.dropout)
    opt, sched = _optimizer(clf, cfg.finetune_lr, cfg.weight_decay, cfg.finetune_steps)
    history: list[dict[str, Any]] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    clf.train()
    for step in range(1, cfg.finetune_steps + 1):
        idx = torch.randint(0, ds.num_train, (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(clf(ds.x_train[idx]), ds.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.finetune_steps:
            row = {"step": cfg.steps + step, "seconds": time.perf_counter() - wall0,
                   "cpu_seconds": time.process_time() - cpu0, "phase": "finetune", "finetune_loss": loss.item()}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    seconds = time.process_time() - cpu0
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(ds.x_test[i : i + 256]).argmax(1) for i in range(0, ds.num_test, 256)])
    return float((pred == ds.y_test).float().mean()), history, seconds


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared parameters counted once


def run_bert_variant(config: BertVariantConfig, *, seed: int, run_dir: Path | None = None,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Pre-train ``config.variant`` with the masked-LM objective on Shakespeare, evaluate masked-LM accuracy on the
    held-out text, fine-tune on the plays; with ``run_dir`` the pre-trained MLM is saved as model.safetensors
    (what a DistilBERT run takes as ``teacher_file``). Times are process CPU seconds (1 thread), robust to other
    work on the machine."""
    from safetensors.torch import load_file, save_file

    cfg = config
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ds = load_shakespeare_char(cfg.data_dir, block_size=cfg.block_size, max_train_windows=cfg.max_train_windows)
    n_chars = ds.num_classes
    vocab, mask_id = n_chars + 1, n_chars  # [MASK] appended after the characters, as shakespeare-mlm does
    keep = torch.linspace(0, ds.num_test - 1, min(cfg.eval_windows, ds.num_test)).round().long()
    eval_xy = mlm_mask(ds.x_test[keep], cfg.mask_prob, mask_id, n_chars, torch.Generator().manual_seed(EVAL_MASK_SEED))
    batcher = MLMBatcher(ds.x_train, cfg.mask_prob, mask_id, n_chars, dynamic=cfg.variant != "bert",
                         seed=seed + 1)
    extras: dict[str, Any] = {"config": asdict(cfg), "seed": seed, "train_windows": ds.num_train,
                              "eval_windows": len(keep)}
    teacher_seconds = 0.0
    history: list[dict[str, Any]] = []
    if cfg.variant == "distilbert":
        teacher = build_variant(cfg, vocab, "bert")
        if cfg.teacher_file is not None:
            try:
                teacher.load_state_dict(load_file(cfg.teacher_file), strict=True)
            except RuntimeError as exc:
                raise ConfigError(f"teacher_file {cfg.teacher_file} does not match this task's BERT ({exc}); use a "
                                  "bert run with the same block_size, d_model, n_layer, n_heads and d_ff") from exc
            extras["teacher"] = cfg.teacher_file
        else:
            static = MLMBatcher(ds.x_train, cfg.mask_prob, mask_id, n_chars, dynamic=False, seed=seed + 1)
            history, teacher_seconds = _pretrain(teacher, static, cfg, gen, None, eval_xy, "teacher", progress)
            extras["teacher"] = "trained in this run (bert, same settings and seed)"
        extras["teacher_mlm_accuracy"], _ = mlm_accuracy(teacher, *eval_xy)
        extras["teacher_parameters"] = _count(teacher)
        model = distil_student(teacher)
        teacher.eval()
    else:
        teacher, model = None, build_variant(cfg, vocab)
    h, pre_seconds = _pretrain(model, batcher, cfg, gen, teacher, eval_xy, "pretrain", progress)
    history += h
    acc, nll = mlm_accuracy(model, *eval_xy)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(run_dir) / "model.safetensors.tmp"
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(Path(run_dir) / "model.safetensors")  # atomic: never a half-written weights file
    params = _count(model)
    plays_acc, h, ft_seconds = _finetune(model.encoder, cfg, gen, progress)
    history += h
    metrics = {"mlm_accuracy": acc, "mlm_loss": nll, "plays_accuracy": plays_acc, "parameters": float(params),
               "pretrain_cpu_seconds": pre_seconds, "finetune_cpu_seconds": ft_seconds}
    extras["teacher_cpu_seconds"] = teacher_seconds
    return write_result(ParadigmResult(metrics, history, extras), run_dir)
