"""The declaration-derived order of every known technique combination equals the order recorded before the
contract change (reference: tests/reference/plan_orders.txt, produced by tests/reference/plan_orders.py on
the code where techniques still named each other in ``after`` / ``before``). Equal orders mean equal runs:
no existing run or technique card changes with the new declarations."""

from __future__ import annotations

from pathlib import Path

import plan_orders

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "plan_orders.txt"


def _recorded() -> dict[str, str]:
    rows = [line.split("\t") for line in REFERENCE.read_text(encoding="utf-8").splitlines()]
    return {combo: order for combo, order in rows}


def test_every_recorded_combination_keeps_its_order() -> None:
    recorded, now = _recorded(), plan_orders.table()
    assert len(recorded) > 4000  # pairs, triples, event groups and the runner's sets
    # techniques registered since add combinations of their own; every recorded one must still be there
    missing = sorted(recorded.keys() - now.keys())
    assert not missing, f"recorded combinations no longer planned (a technique renamed or removed?): {missing[:5]}"
    changed = {c: (recorded[c], now[c]) for c in recorded if recorded[c] != now[c]}
    assert not changed, f"{len(changed)} combinations changed order, e.g. {sorted(changed.items())[:3]}"


def test_the_reference_holds_orders_and_refusals() -> None:
    """The comparison is not vacuous: the reference orders several techniques at the gradient, batch and loss
    events, and records refusals (two loss replacers, two mixers, two averagers)."""
    recorded = _recorded()
    assert recorded["grad_centralization+grad_clip+mixed_precision+nan_guard+sam"] == (
        "fit_start: mixed_precision -> sam | after_backward: mixed_precision -> sam -> grad_centralization -> "
        "grad_clip -> nan_guard")
    assert "batch_start: random_flip -> cutout -> mixup" in recorded["cutout+mixup+random_flip"]
    assert recorded["label_smoothing+weight_penalty"] == "loss: label_smoothing -> weight_penalty"
    for refused in ("focal_loss+label_smoothing", "cutmix+mixup", "ema+swa"):
        assert recorded[refused] == "REFUSED ConflictError"
