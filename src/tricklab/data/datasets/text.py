"""Character-level text data sets from Shakespeare's plays: language modelling, play classification, MLM.

All three read one plain-text file (``shakespeare.txt``: the Gutenberg plays, each starting with its title in
capitals and then a line ``by William Shakespeare``) and share one character vocabulary, the sorted set of
characters of the *whole* file, so a model trained on one set reads the token ids of the others.

* ``shakespeare-char``: next-character prediction (Karpathy's char-rnn / nanoGPT task). The last
  ``test_fraction`` of the text is the test split, contiguous and disjoint from the training text; windows are
  ``x = ids[i:i+T]``, ``y = ids[i+1:i+T+1]``.
* ``shakespeare-plays``: which play a ``passage_len``-character passage comes from (``num_plays`` largest
  plays); train passages from the first 85% of each play, test passages from the last 15%.
* ``shakespeare-mlm``: BERT's masked-language-model data (Devlin et al. 2019, §3.1) with static masking and the
  80/10/10 rule; ``[MASK]`` is appended to the vocabulary at index ``len(chars)``.

The file is found like the Planetoid files: ``data_dir`` (a folder holding ``shakespeare.txt``, or the file
itself) when given, else ``$TRICKLAB_TEXT_DIR``, else ``shared/data/text`` beside the checkout, else
``/work/shared/data/text``. See ``docs/models-sequence.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.errors import DataError

__all__ = [
    "DEFAULT_DIR",
    "FILE_NAME",
    "IGNORE_INDEX",
    "MASK_TOKEN",
    "Play",
    "char_vocab",
    "default_dirs",
    "encode_chars",
    "find_text_file",
    "load_shakespeare_char",
    "load_shakespeare_mlm",
    "load_shakespeare_plays",
    "mlm_mask",
    "read_text",
    "split_plays",
    "windows",
]

FILE_NAME = "shakespeare.txt"
# shared/data/text beside the checkout (src/tricklab/data/datasets/text.py -> parents[4] is the checkout root).
DEFAULT_DIR = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "text"
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index: "no loss at this position"
MASK_TOKEN = "[MASK]"
_BYLINE = re.compile(r"^by William Shakespeare\s*$", re.MULTILINE)


def default_dirs() -> list[Path]:
    """Folders searched for ``shakespeare.txt`` when no ``data_dir`` is given, in order."""
    env = os.environ.get("TRICKLAB_TEXT_DIR")
    return ([Path(env).expanduser()] if env else []) + [DEFAULT_DIR, Path("/work/shared/data/text")]


def find_text_file(data_dir: str | os.PathLike[str] | None = None, file_name: str = FILE_NAME) -> Path:
    """Resolve the text file: ``data_dir`` (folder or file) if given, else the first of :func:`default_dirs`.

    Raises :class:`DataError` naming every place looked at when the file is not there.
    """
    if data_dir is not None and str(data_dir) != "":
        p = Path(data_dir).expanduser()
        path = p if p.is_file() else p / file_name
        if not path.is_file():
            raise DataError(f"text file not found: {path}. Pass data_dir= a folder holding {file_name} "
                            "(recipe key data.data_dir) or the path of the text file itself")
        return path
    for d in default_dirs():
        if (d / file_name).is_file():
            return d / file_name
    raise DataError(f"no data_dir given and none of {[str(d) for d in default_dirs()]} holds {file_name}: pass "
                    f"data_dir=DIR (recipe key data.data_dir=DIR) naming a folder with {file_name}, or set "
                    "$TRICKLAB_TEXT_DIR")


def read_text(data_dir: str | os.PathLike[str] | None = None) -> str:
    """The whole text file as a str (UTF-8; CRLF line ends normalised to LF so splits do not depend on them)."""
    path = find_text_file(data_dir)
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} as UTF-8 text: {exc}") from exc


def char_vocab(text: str) -> list[str]:
    """Sorted list of the distinct characters of ``text``: index = token id."""
    if not text:
        raise DataError("the text is empty: nothing to build a vocabulary from")
    return sorted(set(text))


def encode_chars(text: str, vocab: list[str]) -> np.ndarray:
    """Token ids (int64 numpy array, one per character) of ``text`` under the sorted char ``vocab``.

    Vectorised: the code points are read as one uint32 array and looked up with ``searchsorted`` in the sorted
    vocabulary's code points (about 30 ms for the 5 MB file instead of seconds for a Python loop).
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.array([ord(c) for c in vocab], dtype=np.uint32)
    if np.any(table[1:] <= table[:-1]):
        raise ValueError("encode_chars needs a sorted vocabulary of distinct single characters (char_vocab(text))")
    ids = np.searchsorted(table, codes)
    ids_c = np.minimum(ids, len(table) - 1)
    bad = table[ids_c] != codes
    if bad.any():
        unknown = sorted({chr(int(c)) for c in codes[bad][:1000]})
        raise ValueError(f"characters not in the vocabulary: {unknown!r}; build the vocabulary from this text")
    return ids.astype(np.int64)


def windows(ids: Tensor, length: int, stride: int, max_windows: int | None = None) -> Tensor:
    """All windows ``ids[s:s+length]`` for ``s = 0, stride, 2*stride, ...`` that fit, as a (N, length) tensor.

    With ``max_windows`` the N starts are thinned to ``max_windows`` evenly spaced ones (deterministic, and it
    keeps the whole text represented rather than only its beginning). Gathering by index instead of
    ``unfold`` + copy keeps memory at N * length even for ``stride=1``.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length} and {stride}")
    n = (ids.numel() - length) // stride + 1 if ids.numel() >= length else 0
    starts = torch.arange(n, dtype=torch.int64) * stride
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1 or None, got {max_windows}")
        if n > max_windows:
            starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    return ids[starts[:, None] + torch.arange(length)]


def _check_fraction(name: str, value: float, lo_open: bool = True) -> float:
    value = float(value)
    if not (0.0 < value < 1.0 if lo_open else 0.0 <= value < 1.0):
        interval = "(0, 1)" if lo_open else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _check_int(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


# ------------------------------------------------------------------------------------------ shakespeare-char
@DATASETS.register("shakespeare-char", summary="Shakespeare next-character LM: windows of block_size chars, "
                                              "last 10% of the text held out (contiguous)")
def load_shakespeare_char(data_dir: str | None = None, *, block_size: int = 128, test_fraction: float = 0.1,
                          val_fraction: float = 0.0, stride: int | None = None,
                          max_train_windows: int | None = None) -> ArrayDataset:
    """Next-character prediction on Shakespeare.

    The token stream ``ids`` (N chars) is cut into three contiguous parts, in text order:
    train ``[0, N - n_val - n_test)``, val ``[.., N - n_test)``, test ``[N - n_test, N)`` with
    ``n_test = round(test_fraction * N)``. Each part is windowed on its own, so no window crosses a split
    boundary: ``x = ids[s:s+T]``, ``y = ids[s+1:s+T+1]`` (targets are the next characters). Training windows
    start every ``stride`` characters (default ``block_size``: non-overlapping); val/test windows are always
    non-overlapping so each held-out character is scored once. ``max_train_windows`` keeps that many evenly
    spaced training windows (a "tiny slice" for quick tests).

    Returns x, y int64 (N, T); ``num_classes`` = vocabulary size; ``meta["vocab"]`` the characters.
    """
    _check_int("block_size", block_size)
    _check_int("stride", stride, allow_none=True)
    _check_int("max_train_windows", max_train_windows, allow_none=True)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction, lo_open=False)
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction + val_fraction must be < 1, got {test_fraction} + {val_fraction}")
    text = read_text(data_dir)
    vocab = char_vocab(text)
    ids = torch.from_numpy(encode_chars(text, vocab))
    n = ids.numel()
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    n_train = n - n_test - n_val
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    for split in ("train", "test") + (("val",) if n_val else ()):
        lo, hi = bounds[split]
        if hi - lo < block_size + 1:
            raise ValueError(f"shakespeare-char: the {split} text has {hi - lo} characters, fewer than "
                             f"block_size + 1 = {block_size + 1}; lower block_size or change the fractions")

    def xy(split: str, step: int, cap: int | None) -> tuple[Tensor, Tensor]:
        lo, hi = bounds[split]
        w = windows(ids[lo:hi], block_size + 1, step, cap)  # (N, T+1): inputs and shifted targets together
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    x_tr, y_tr = xy("train", stride or block_size, max_train_windows)
    x_te, y_te = xy("test", block_size, None)
    x_va, y_va = xy("val", block_size, None) if n_val else (None, None)
    return ArrayDataset(
        name="shakespeare-char", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, x_val=x_va, y_val=y_va,
        num_classes=len(vocab), input_shape=(block_size,),
        meta={"vocab": vocab, "source": str(find_text_file(data_dir)), "split_chars": bounds,
              "task": "token-lm", "ignore_index": IGNORE_INDEX},
    )


# ----------------------------------------------------------------------------------------- shakespeare-plays
@dataclass(frozen=True)
class Play:
    """One work of the file: its title and the character span ``[start, end)`` of its body (after the byline)."""

    title: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def split_plays(text: str) -> list[Play]:
    """Split the Gutenberg collection into works, in file order.

    A work starts at its title, the last non-empty line before a ``by William Shakespeare`` line; its body runs
    from the end of that byline to the start of the next work's title (or the end of the file). The title and
    byline are left out of the body so a passage never contains its own label.
    """
    bylines = list(_BYLINE.finditer(text))
    if not bylines:
        raise DataError("no 'by William Shakespeare' line found: the file is not the Gutenberg plays collection")
    title_starts, titles = [], []
    for m in bylines:
        before = text[:m.start()].rstrip("\n")
        line_start = before.rfind("\n") + 1
        title = before[line_start:].strip()
        if not title:
            raise DataError(f"no title line before the byline at character {m.start()}")
        title_starts.append(line_start)
        titles.append(title)
    plays = []
    for i, m in enumerate(bylines):
        end = title_starts[i + 1] if i + 1 < len(bylines) else len(text)
        plays.append(Play(titles[i], m.end(), end))
    return plays


@DATASETS.register("shakespeare-plays", summary="which of the num_plays largest Shakespeare plays a passage of "
                                               "passage_len chars comes from (train: first 85%, test: last 15%)")
def load_shakespeare_plays(data_dir: str | None = None, *, passage_len: int = 128, num_plays: int = 8,
                           passages_per_play: int | None = None, test_passages_per_play: int | None = None,
                           test_fraction: float = 0.15) -> ArrayDataset:
    """Play classification: label = which play a passage comes from.

    The ``num_plays`` largest works (by body length) are the classes, in file order; ``class_names`` are their
    titles. Each play's body is split at ``(1 - test_fraction)`` of its length: train passages are
    non-overlapping windows of the first part, test passages of the second, so no character is in both.
    ``passages_per_play`` (train) and ``test_passages_per_play`` default to the number of non-overlapping
    windows that fit in the *smallest* chosen play, which keeps the classes balanced; when a play has room
    for more, evenly spaced windows are kept. x uses the shakespeare-char vocabulary (``meta["vocab"]``).
    """
    _check_int("passage_len", passage_len)
    _check_int("num_plays", num_plays)
    _check_int("passages_per_play", passages_per_play, allow_none=True)
    _check_int("test_passages_per_play", test_passages_per_play, allow_none=True)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    text = read_text(data_dir)
    vocab = char_vocab(text)
    ids = torch.from_numpy(encode_chars(text, vocab))
    plays = split_plays(text)
    if num_plays > len(plays):
        raise ValueError(f"num_plays={num_plays} but the file holds only {len(plays)} works")
    # largest num_plays by body length; ties broken by file order (sorted is stable), then back to file order
    chosen = sorted(sorted(range(len(plays)), key=lambda i: -plays[i].length)[:num_plays])
    parts: dict[str, list[Tensor]] = {"train": [], "test": []}
    for i in chosen:
        p = plays[i]
        cut = p.start + int(round((1.0 - test_fraction) * p.length))
        parts["train"].append(ids[p.start:cut])
        parts["test"].append(ids[cut:p.end])

    def take(split: str, per_play: int | None) -> tuple[Tensor, Tensor]:
        fits = [seg.numel() // passage_len for seg in parts[split]]
        k = min(fits) if per_play is None else per_play
        if k < 1 or k > min(fits):
            worst = plays[chosen[int(np.argmin(fits))]].title
            raise ValueError(f"shakespeare-plays: {split} part of {worst!r} holds only {min(fits)} non-overlapping "
                             f"passages of {passage_len} chars, asked for {k}; lower passage_len, num_plays or the "
                             "passages per play")
        xs = [windows(seg, passage_len, passage_len, k) for seg in parts[split]]
        ys = [torch.full((k,), c, dtype=torch.int64) for c in range(len(chosen))]
        return torch.cat(xs), torch.cat(ys)

    x_tr, y_tr = take("train", passages_per_play)
    x_te, y_te = take("test", test_passages_per_play)
    return ArrayDataset(
        name="shakespeare-plays", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=num_plays,
        input_shape=(passage_len,), class_names=[plays[i].title for i in chosen],
        meta={"vocab": vocab, "source": str(find_text_file(data_dir)), "task": "sequence-classification",
              "play_spans": {plays[i].title: (plays[i].start, plays[i].end) for i in chosen},
              "test_fraction": test_fraction},
    )


# ------------------------------------------------------------------------------------------ shakespeare-mlm
def mlm_mask(tokens: Tensor, mask_prob: float, mask_id: int, vocab_size: int,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's masking (Devlin et al. 2019, §3.1, "Task #1: Masked LM") of a batch of token ids.

    Each position is selected independently with probability ``mask_prob``. A selected token is replaced by
    ``mask_id`` with probability 0.8, by a uniformly random token from ``[0, vocab_size)`` with probability
    0.1, and kept with probability 0.1 (so the model cannot assume an unmasked input token is correct).

    Args:
        tokens: (..., T) int64 ids in ``[0, vocab_size)``.
        mask_prob: selection rate in (0, 1).
        mask_id: the ``[MASK]`` id (usually ``vocab_size``: appended after the real tokens).
        vocab_size: number of real tokens the random replacement draws from (``[MASK]`` excluded).
        generator: RNG for the draws (seed it for static, reproducible masking).

    Returns:
        ``(inputs, targets)``: inputs the corrupted ids; targets the original id at selected positions and
        ``-100`` (cross_entropy's ignore_index) elsewhere; both the shape of ``tokens``.
    """
    if tokens.dtype != torch.int64:
        raise TypeError(f"mlm_mask expects int64 token ids, got {tokens.dtype}")
    if not 0.0 < float(mask_prob) < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    dev = tokens.device
    u = torch.rand(tokens.shape, generator=generator, device=dev)  # selection draw
    v = torch.rand(tokens.shape, generator=generator, device=dev)  # which of the 80/10/10 branches
    rnd = torch.randint(0, vocab_size, tokens.shape, generator=generator, device=dev)
    selected = u < mask_prob
    targets = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    inputs = torch.where(selected & (v < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(selected & (v >= 0.8) & (v < 0.9), rnd, inputs)
    return inputs, targets


@DATASETS.register("shakespeare-mlm", summary="Shakespeare masked-LM windows: BERT static masking, 80/10/10 rule, "
                                             "[MASK] appended to the char vocabulary")
def load_shakespeare_mlm(data_dir: str | None = None, *, block_size: int = 128, mask_prob: float = 0.15,
                         test_fraction: float = 0.1, max_train_windows: int | None = None,
                         seed: int = 0) -> ArrayDataset:
    """Masked-language-model data over the shakespeare-char splits.

    Windows are the non-overlapping ``block_size`` windows of the same contiguous train/test text as
    ``shakespeare-char``; each is masked once at load time (static masking, as in the original BERT) with
    :func:`mlm_mask` driven by ``torch.Generator().manual_seed(seed)`` (train first, then test). The vocabulary
    is the characters plus ``[MASK]`` at index ``len(chars)`` (``meta["mask_id"]``); ``num_classes`` counts it.
    """
    _check_int("block_size", block_size)
    _check_int("max_train_windows", max_train_windows, allow_none=True)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if not 0.0 < float(mask_prob) < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    text = read_text(data_dir)
    chars = char_vocab(text)
    ids = torch.from_numpy(encode_chars(text, chars))
    n_test = int(round(test_fraction * ids.numel()))
    n_train = ids.numel() - n_test
    if min(n_train, n_test) < block_size:
        raise ValueError(f"shakespeare-mlm: a split has fewer than block_size={block_size} characters")
    x_train = windows(ids[:n_train], block_size, block_size, max_train_windows)
    x_test = windows(ids[n_train:], block_size, block_size)
    mask_id = len(chars)
    g = torch.Generator().manual_seed(int(seed))
    xi_tr, y_tr = mlm_mask(x_train, mask_prob, mask_id, len(chars), g)
    xi_te, y_te = mlm_mask(x_test, mask_prob, mask_id, len(chars), g)
    return ArrayDataset(
        name="shakespeare-mlm", x_train=xi_tr, y_train=y_tr, x_test=xi_te, y_test=y_te,
        num_classes=len(chars) + 1, input_shape=(block_size,),
        meta={"vocab": chars + [MASK_TOKEN], "mask_id": mask_id, "mask_prob": float(mask_prob), "seed": int(seed),
              "source": str(find_text_file(data_dir)), "split_chars": {"train": (0, n_train),
                                                                       "test": (n_train, ids.numel())},
              "task": "token-mlm", "ignore_index": IGNORE_INDEX},
    )

