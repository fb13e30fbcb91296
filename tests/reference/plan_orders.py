"""Reference: the order ``tricklab.train.plan`` gives every known combination of registered techniques.

Produced on main at commit 7ae2780 (before issue 11's contract change, when the order still came from
techniques naming each other in ``after`` / ``before``), and compared after it by
``tests/contracts/test_plan_order.py``: the declaration-derived order must equal it for every combination, so
no existing run or card changes. Regenerate (only when an order change is intended, and say so in the commit):

    PYTHONPATH=src python tests/reference/plan_orders.py > tests/reference/plan_orders.txt

Combinations: every registered technique alone, every pair and every triple (with the variants below), every
subset of the techniques that meet at the same events (the gradient stages, the batch stages, the loss, the
evaluation weights), and each technique inside the set the lab runner adds around it (schedule, checkpointing,
metric log, progress). One line per combination: its techniques joined by ``+``, a tab, then the lines of
``Plan.describe()`` where two or more techniques meet at one event (``event: a -> b``), joined by `` | `` (empty
when no event holds two of them); a refused combination reads ``REFUSED <error class>``.

Only names and public constructors are used, so the script runs on the code before and after the change.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

# variant label -> (registry name, constructor arguments); one variant per technique, plus the instance-level
# declarations (swa with swa_lr also sets the learning rate)
ARGS: dict[str, dict[str, Any]] = {
    "mixup": {"num_classes": 3}, "cutmix": {"num_classes": 3}, "mix": {"num_classes": 3},
}
EXTRA_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "swa(swa_lr)": ("swa", {"swa_lr": 0.01}),
}
# techniques that share events, whose every subset is recorded (not only pairs and triples)
GROUPS: dict[str, tuple[str, ...]] = {
    "gradients": ("mixed_precision", "sam", "grad_centralization", "grad_clip", "nan_guard", "diagnostics",
                  "grad_accumulation"),
    "batch": ("random_flip", "random_shift", "cutout", "random_erasing", "mixup", "lsuv", "dropblock_schedule",
              "diagnostics"),
    "loss": ("label_smoothing", "weight_penalty", "diagnostics", "mixed_precision", "sam", "nan_guard"),
    "evaluation": ("ema", "early_stopping", "checkpointing", "metrics_log", "progress", "lr_schedule",
                   "diagnostics"),
    "averaging": ("swa(swa_lr)", "lr_schedule", "early_stopping", "sam", "progress", "checkpointing"),
}
# what lab.runner adds around the recipe's techniques
RUNNER_SETS: dict[str, tuple[str, ...]] = {
    "runner": ("lr_schedule", "checkpointing", "metrics_log", "progress"),
    "runner-constant": ("checkpointing", "metrics_log"),
}


def variants(names: list[str]) -> dict[str, Callable[[], Any]]:
    from tricklab.techniques import TECHNIQUES

    out: dict[str, Callable[[], Any]] = {}
    for name in names:
        out[name] = (lambda n=name: TECHNIQUES.get(n)(**ARGS.get(n, {})))
    for label, (name, args) in EXTRA_VARIANTS.items():
        out[label] = (lambda n=name, a=args: TECHNIQUES.get(n)(**{**ARGS.get(n, {}), **a}))
    return out


def combinations(labels: list[str]) -> list[tuple[str, ...]]:
    combos: set[tuple[str, ...]] = set()
    for k in (1, 2, 3):
        combos.update(itertools.combinations(labels, k))
    for members in GROUPS.values():
        for k in range(2, len(members) + 1):
            combos.update(tuple(sorted(c)) for c in itertools.combinations(members, k))
    for label in labels:
        for extra in RUNNER_SETS.values():
            combos.add(tuple(sorted({label, *extra})))
    # a combination never holds a technique twice (a variant counts as its technique)
    return sorted(c for c in combos if len({lbl.split("(")[0] for lbl in c}) == len(c))


def describe(combo: tuple[str, ...], make: dict[str, Callable[[], Any]]) -> str:
    from tricklab.train import plan

    try:
        text = plan([make[label]() for label in combo]).describe()
    except Exception as e:  # noqa: BLE001 - the refusal's class is the recorded outcome
        return f"REFUSED {type(e).__name__}"
    return " | ".join(line for line in text.splitlines() if " -> " in line)


def table() -> dict[str, str]:
    """Combination -> its recorded order (the format of plan_orders.txt)."""
    from tricklab.techniques import TECHNIQUES

    make = variants(TECHNIQUES.names())
    return {"+".join(c): describe(c, make) for c in combinations(sorted(make))}


def main() -> None:
    for combo, order in table().items():
        sys.stdout.write(f"{combo}\t{order}\n")


if __name__ == "__main__":
    main()
