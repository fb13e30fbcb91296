"""Toy sequence-to-sequence tasks: ``seq-reverse`` and ``seq-sort`` (random digit strings, length 8..12).

The classic sanity checks for encoder-decoder RNNs with attention (reversal is the task of Sutskever, Vinyals & Le
2014, "Sequence to Sequence Learning with Neural Networks", NeurIPS; sorting that of Vinyals, Bengio & Kudlur 2016,
"Order Matters", ICLR). Reversal needs position-based attention (output j attends to input n - 1 - j); sorting needs
content-based attention.

The lab's trainer calls ``model(x)`` only, so one row of ``x`` packs the source and the teacher-forced decoder input
(``max_len = M``, source length ``n``, target ``t_0..t_{n-1}``)::

    positions 0 .. M-1        source digits, right-padded with <pad>
    position  M               <sep>, which is also the decoder's start token (BOS)
    positions M+1 .. 2M       the target shifted right by one: t_0 .. t_{n-1}, then <pad>

    y[M + j] = t_j for j < n,  y[M + n] = <eos>,  -100 everywhere else (the source and the padding)

so ``x`` and ``y`` are ``(N, 2M + 1)``, and the decoder reading ``x[M + j]`` must output ``y[M + j]``: the usual
teacher forcing. Token ids: ``0 <pad>``, ``1 <sep>``, ``2 <eos>``, ``3 + d`` for digit d; ``num_classes = 13``.
Generated with a seeded ``torch.Generator`` (train, then test, from one stream); nothing is cached.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tricklab.data.base import DATASETS, ArrayDataset

__all__ = [
    "DIGIT_OFFSET",
    "EOS_ID",
    "IGNORE_INDEX",
    "PAD_ID",
    "SEP_ID",
    "VOCAB",
    "load_seq_reverse",
    "load_seq_sort",
    "make_seq2seq_toy",
]

IGNORE_INDEX = -100
PAD_ID, SEP_ID, EOS_ID, DIGIT_OFFSET = 0, 1, 2, 3
VOCAB: tuple[str, ...] = ("<pad>", "<sep>", "<eos>") + tuple(str(d) for d in range(10))
Seq2SeqTask = Literal["reverse", "sort"]


def _check_pos(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def make_seq2seq_toy(num: int, task: Seq2SeqTask, min_len: int = 8, max_len: int = 12,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``num`` examples of ``task`` (``"reverse"`` or ``"sort"``) in the packed layout of the module docstring.

    Lengths are uniform in ``[min_len, max_len]``, digits uniform in 0..9.

    Returns:
        x, y: (num, 2 * max_len + 1) int64.
    """
    _check_pos(num=num, min_len=min_len, max_len=max_len)
    if min_len > max_len:
        raise ValueError(f"min_len={min_len} must be <= max_len={max_len}")
    if task not in ("reverse", "sort"):
        raise ValueError(f"task must be 'reverse' or 'sort', got {task!r}")
    m = max_len
    lengths = torch.randint(min_len, max_len + 1, (num,), generator=generator)  # (N,)
    digits = torch.randint(0, 10, (num, m), generator=generator)  # (N, M); only the first n of a row are used
    pos = torch.arange(m)
    real = pos[None, :] < lengths[:, None]  # (N, M) True on the n real source positions
    if task == "reverse":
        # t_j = s_{n-1-j}; clamp keeps the index valid in the padding, which is masked below anyway
        idx = (lengths[:, None] - 1 - pos[None, :]).clamp(min=0)
        target = digits.gather(1, idx)
    else:
        # padding sorts last (key 10), so the first n sorted entries are the sorted real digits
        target = torch.where(real, digits, torch.full_like(digits, 10)).sort(dim=1).values
    src = torch.where(real, digits + DIGIT_OFFSET, PAD_ID)  # (N, M)
    tgt = torch.where(real, target + DIGIT_OFFSET, PAD_ID)  # (N, M): t_0..t_{n-1}, then pad
    sep = torch.full((num, 1), SEP_ID, dtype=torch.int64)
    x = torch.cat([src, sep, tgt], dim=1)  # (N, 2M + 1); decoder input = x[:, M:] = [<sep>, t_0, .., t_{M-1}]
    # y over the decoder slots M .. 2M: t_0..t_{n-1}, <eos> at slot n, ignore after
    slot = torch.arange(m + 1)[None, :]
    out = torch.cat([tgt, torch.full((num, 1), PAD_ID, dtype=torch.int64)], dim=1)  # (N, M + 1)
    out = torch.where(slot == lengths[:, None], EOS_ID, out)
    out = torch.where(slot > lengths[:, None], IGNORE_INDEX, out)
    y = torch.cat([torch.full((num, m), IGNORE_INDEX, dtype=torch.int64), out], dim=1)
    return x, y


def _load(name: str, task: Seq2SeqTask, num_train: int, num_test: int, min_len: int, max_len: int,
          seed: int) -> ArrayDataset:
    _check_pos(num_train=num_train, num_test=num_test)
    g = torch.Generator().manual_seed(int(seed))
    x_tr, y_tr = make_seq2seq_toy(num_train, task, min_len, max_len, g)
    x_te, y_te = make_seq2seq_toy(num_test, task, min_len, max_len, g)
    return ArrayDataset(
        name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        num_classes=len(VOCAB), input_shape=(2 * max_len + 1,),
        meta={"vocab": list(VOCAB), "seed": int(seed), "task": "seq2seq", "min_len": min_len, "max_len": max_len,
              "src_len": max_len, "pad_id": PAD_ID, "sep_id": SEP_ID, "bos_id": SEP_ID, "eos_id": EOS_ID,
              "ignore_index": IGNORE_INDEX,
              "layout": "x = [source padded to src_len ; <sep> ; target shifted right], y = -100 except the target "
                        "and <eos> at the decoder positions"},
    )


@DATASETS.register("seq-reverse", summary="toy seq2seq: reverse a string of 8..12 random digits, 8000/1000, "
                                          "source and shifted target packed in x")
def load_seq_reverse(data_dir: str | None = None, *, num_train: int = 8000, num_test: int = 1000, min_len: int = 8,
                     max_len: int = 12, seed: int = 0) -> ArrayDataset:
    """Reversal as an :class:`ArrayDataset` (layout in the module docstring); ``data_dir`` is ignored."""
    return _load("seq-reverse", "reverse", num_train, num_test, min_len, max_len, seed)


@DATASETS.register("seq-sort", summary="toy seq2seq: sort a string of 8..12 random digits, 8000/1000, "
                                       "source and shifted target packed in x")
def load_seq_sort(data_dir: str | None = None, *, num_train: int = 8000, num_test: int = 1000, min_len: int = 8,
                  max_len: int = 12, seed: int = 0) -> ArrayDataset:
    """Sorting as an :class:`ArrayDataset` (layout in the module docstring); ``data_dir`` is ignored."""
    return _load("seq-sort", "sort", num_train, num_test, min_len, max_len, seed)
