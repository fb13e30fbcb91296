"""Text: a plain-text file for language modelling, or a table of (text, label) for classification.

Tokens are characters (``tokenizer: char``) or words (``tokenizer: word``: runs of letters/digits/underscore,
and each punctuation mark on its own, ``re.findall(r"\\w+|[^\\w\\s]")``), optionally lowercased. The vocabulary
is built on the training split only: tokens seen at least ``min_count`` times there, the ``max_vocab`` most
frequent of them if set (ties by token), in sorted order for characters and by frequency for words; every
other token reads as ``<unk>``. Language modelling puts ``<unk>`` at id 0; classification puts ``<pad>`` at 0
and ``<unk>`` at 1, so an all-zero tail is padding.

Language modelling follows the ``shakespeare-char`` task (:mod:`tricklab.data.datasets.text`, whose
:func:`windows` it reuses): the token stream is cut into contiguous train / val / test parts in text order
(or read from the user's own files) and each part into windows ``x = ids[s:s+T]``, ``y = ids[s+1:s+T+1]``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tricklab.data.datasets.text import IGNORE_INDEX, windows
from tricklab.data.files.common import Digest, Features, Part, Sources
from tricklab.data.files.spec import FileSpec
from tricklab.data.files.tables import read_frame, table_kind, target_values
from tricklab.errors import ConfigError, DataError

__all__ = ["IGNORE_INDEX", "PAD", "UNK", "build_vocab", "encode", "featurize_texts", "lm_windows", "read_lm",
           "read_text_table", "text_column", "tokenize"]

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, tokenizer: str, lowercase: bool) -> list[str]:
    if lowercase:
        text = text.lower()
    return list(text) if tokenizer == "char" else _WORD.findall(text)


def build_vocab(token_lists: list[list[str]], tokenizer: str, min_count: int, max_vocab: int | None,
                specials: list[str]) -> list[str]:
    """Specials first, then the training tokens kept by ``min_count``/``max_vocab`` (see the module doc)."""
    counts: Counter[str] = Counter()
    for toks in token_lists:
        counts.update(toks)
    kept = [(t, n) for t, n in counts.items() if n >= min_count and t not in specials]
    if max_vocab is not None:
        kept = sorted(kept, key=lambda tn: (-tn[1], tn[0]))[:max_vocab]
    if tokenizer == "char":
        tokens = sorted(t for t, _ in kept)
    else:
        tokens = [t for t, _ in sorted(kept, key=lambda tn: (-tn[1], tn[0]))]
    return specials + tokens


def encode(tokens: list[str], index: dict[str, int], unk: int) -> np.ndarray:
    return np.fromiter((index.get(t, unk) for t in tokens), dtype=np.int64, count=len(tokens))


def _read_text(path: Path, encoding: str, digest: Digest, name: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    digest.add_bytes(name, data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} (byte {exc.start}) is not valid {encoding} ({exc.reason}); set "
                        "encoding: to the file's text encoding (e.g. latin-1)") from exc
    text = text.replace("\r\n", "\n")  # so splits and windows do not depend on the line ends
    if not text:
        raise DataError(f"{path}: the file is empty")
    return text


# ----------------------------------------------------------------------------------------- language model
def read_lm(spec: FileSpec, digest: Digest) -> tuple[dict[str, Tensor], list[str], dict[str, Any]]:
    """Token ids per split, the vocabulary and the split record for a language-modelling text."""
    o = spec.options
    files = {role: loc["path"] for role, loc in spec.sources.items()}
    texts = {role: _read_text(p, o["encoding"], digest, f"{role}:path") for role, p in files.items()}
    toks = {role: tokenize(t, o["tokenizer"], o["lowercase"]) for role, t in texts.items()}
    for role in ("test", "val"):
        if role in toks and o[f"{role}_fraction"] is not None:
            raise ConfigError(f"data.{role}_fraction is set but a {role} file is given; drop {role}_fraction")
    if "all" in toks or ("test" not in toks) or (o["val_fraction"] and "val" not in toks):
        # carve contiguous parts off the end, in text order: [train | val | test]
        pool_role = "all" if "all" in toks else "train"
        pool = toks.pop(pool_role)
        n = len(pool)
        test_f = 0.0 if "test" in toks else (0.1 if o["test_fraction"] is None else o["test_fraction"])
        val_f = 0.0 if "val" in toks else (o["val_fraction"] or 0.0)
        if "test" not in toks and test_f == 0.0:
            raise ConfigError("data.test_fraction is 0 and no test file is given: every data set needs a test split")
        # a non-zero fraction never gives an empty part
        n_test, n_val = (max(1, round(f * n)) if f else 0 for f in (test_f, val_f))
        n_train = n - n_test - n_val
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        for role in ("train", "val", "test"):
            lo, hi = bounds[role]
            if hi > lo:
                toks[role] = pool[lo:hi]
                files[role] = files[pool_role]
        split = {"method": "contiguous", "test_fraction": test_f or None, "val_fraction": val_f or None,
                 "token_bounds": {r: list(b) for r, b in bounds.items() if b[1] > b[0]}}
    else:
        split = {"method": "files", "test_fraction": None, "val_fraction": None}
    files.pop("all", None)
    vocab = build_vocab([toks["train"]], o["tokenizer"], o["min_count"], o["max_vocab"], [UNK])
    index = {t: i for i, t in enumerate(vocab)}
    ids = {role: torch.from_numpy(encode(t, index, 0)) for role, t in toks.items()}
    T = o["block_size"]
    for role, t in ids.items():
        if t.numel() < T + 1:
            raise DataError(f"{files[role]}: the {role} text has {t.numel()} {o['tokenizer']} tokens, fewer than "
                            f"block_size + 1 = {T + 1}; lower block_size, give more text or change the fractions")
    split["sources"] = {role: str(p) for role, p in files.items()}
    split["sizes_tokens"] = {role: int(t.numel()) for role, t in ids.items()}
    split["unknown_tokens"] = {role: int((t == 0).sum()) for role, t in ids.items() if role != "train"}
    return ids, vocab, split


def lm_windows(ids: dict[str, Tensor], o: dict[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
    T = o["block_size"]
    out = {}
    for role, t in ids.items():
        # training windows every `stride` tokens (default: non-overlapping); held-out ones never overlap
        step, cap = (o["stride"] or T, o["max_train_windows"]) if role == "train" else (T, None)
        w = windows(t, T + 1, step, cap)  # (N, T+1): inputs and shifted targets together
        out[role] = (w[:, :-1].contiguous(), w[:, 1:].contiguous())
    return out


# ---------------------------------------------------------------------------------------- (text, label)
def read_text_table(spec: FileSpec, digest: Digest) -> Sources:
    o = spec.options
    targets = [o["target"]] if isinstance(o["target"], str) else list(o["target"])
    parts: dict[str, Part] = {}
    for role, loc in spec.sources.items():
        path = loc["path"]
        digest.add_file(f"{role}:path", path)
        df = read_frame(path, table_kind(path, o["table_format"]), o["sep"], o["encoding"])
        for col, key in [(o["text"], "text")] + [(t, "target") for t in targets]:
            if col not in df.columns:
                raise DataError(f"{path}: no {key} column {col!r}; its columns are {[str(c) for c in df.columns]}. "
                                f"Set {key}: to the right name")
        if len(df) == 0:
            raise DataError(f"{path}: the table has a header but no rows")
        part = Part(str(path), None, target_values(df, targets, o["label_sep"], str(path)), np.arange(len(df)))
        part.x = text_column(df[o["text"]].tolist(), part, o["text"])
        parts[role] = part
    names = targets if len(targets) > 1 else None
    return Sources(parts, lambda p: featurize_texts(p, o), class_names=names)


def text_column(values: list[Any], part: Part, col: str) -> np.ndarray:
    """The texts as an object array of str; a missing text is an error naming its row."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            if v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType":
                raise DataError(f"{part.describe(i)}, column {col!r}: the text is missing; fill or drop the row")
            v = str(v)
        out[i] = v
    return out


def featurize_texts(parts: dict[str, Part], o: dict[str, Any]) -> Features:
    """Token ids (N, max_len) int64 per split: vocabulary from the training texts, right-padded with <pad>=0."""
    toks = {role: [tokenize(t, o["tokenizer"], o["lowercase"]) for t in p.x.tolist()] for role, p in parts.items()}
    vocab = build_vocab(toks["train"], o["tokenizer"], o["min_count"], o["max_vocab"], [PAD, UNK])
    index = {t: i for i, t in enumerate(vocab)}
    longest = max((len(t) for t in toks["train"]), default=1)
    max_len = o["max_len"] or min(max(longest, 1), 512)
    xs, truncated, unknown = {}, {}, {}
    for role, lists in toks.items():
        x = np.zeros((len(lists), max_len), dtype=np.int64)
        for i, t in enumerate(lists):
            ids = encode(t[:max_len], index, 1)
            x[i, :len(ids)] = ids
        xs[role] = x
        truncated[role] = int(sum(len(t) > max_len for t in lists))
        unknown[role] = int((x == 1).sum())
    meta = {"vocab": vocab, "pad_id": 0, "unk_id": 1, "max_len": max_len, "tokenizer": o["tokenizer"],
            "truncated": truncated, "unknown_tokens": unknown, "task": "sequence-classification"}
    return Features(xs, (max_len,), meta)

