"""Early stopping on two metrics with the rule of Velickovic et al.'s GAT code (``second_metric``).

Reference: the loop of PetarV-/GAT ``execute_cora.py`` written out in Python below (``gat_rule``): the counter
resets when val accuracy >= its best or val loss <= its best; the checkpoint is saved when both hold; stop when
the counter reaches the patience. It is run on scripted metric sequences and compared with the technique inside
the trainer: stop step, kept step and the restored weights (bit-exact, from a probe's copy).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import EarlyStopping
from tricklab.train import Technique, Trainer


def gat_rule(losses: list[float], accs: list[float], patience: int) -> tuple[int, int]:
    """(stop epoch, saved epoch), 1-based, as execute_cora.py computes them (stop = len when it never stops)."""
    vlss_mn, vacc_mx, curr, saved = float("inf"), 0.0, 0, -1
    for epoch, (loss, acc) in enumerate(zip(losses, accs), start=1):
        if acc >= vacc_mx or loss <= vlss_mn:
            if acc >= vacc_mx and loss <= vlss_mn:
                saved = epoch
            vacc_mx, vlss_mn = max(acc, vacc_mx), min(loss, vlss_mn)
            curr = 0
        else:
            curr += 1
            if curr == patience:
                return epoch, saved
    return len(losses), saved


class Probe(Technique):
    name = "probe"
    reads = frozenset({"params"})

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_after_step(self, state) -> None:
        self.by_step[state.step] = copy.deepcopy(state.raw_model.state_dict())


def _fit(losses: list[float], accs: list[float], es: EarlyStopping) -> tuple[object, nn.Module, Probe]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    it = iter(zip(losses, accs))

    def metric_fn(logits, targets):
        loss, acc = next(it)
        return {"loss": loss, "accuracy": acc}

    model, probe = nn.Linear(4, 3), Probe()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 32, seed=0),
                      techniques=[es, probe], max_steps=len(losses), eval_data=(x, y), eval_every=1,
                      metric_fn=metric_fn)
    return trainer.fit(), model, probe


CASES = {
    # loss keeps falling a little while accuracy stalls: the counter keeps resetting, the kept step moves only
    # when both are at least as good
    "loss_resets": ([1.0, 0.9, 0.85, 0.84, 0.845, 0.846, 0.847, 0.848, 0.9],
                    [0.5, 0.6, 0.6, 0.58, 0.59, 0.57, 0.56, 0.55, 0.55], 3),
    # ties count: an equal accuracy resets the counter
    "ties": ([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6], [0.7, 0.7, 0.69, 0.7, 0.68, 0.6, 0.6], 2),
    "random": (torch.rand(60, generator=torch.Generator().manual_seed(3)).tolist(),
               (torch.rand(60, generator=torch.Generator().manual_seed(4)) * 0.1 + 0.7).round(decimals=2).tolist(),
               5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_gat_code_loop(case: str) -> None:
    losses, accs, patience = CASES[case]
    stop, saved = gat_rule(losses, accs, patience)
    es = EarlyStopping(metric="loss", mode="min", patience=patience, restore_best=True, second_metric="accuracy",
                       second_mode="max")
    st, model, probe = _fit(losses, accs, es)
    assert st.step == stop and es.best_step == saved
    assert st.should_stop == (stop < len(losses))
    for k, v in model.state_dict().items():  # the weights evaluated at the saved epoch are put back
        assert torch.equal(v, probe.by_step[saved][k]), k


def test_state_round_trip_and_missing_metric() -> None:
    es = EarlyStopping(metric="loss", mode="min", patience=2, second_metric="accuracy")
    _fit([1.0, 0.9, 0.95], [0.1, 0.2, 0.1], es)
    fresh = EarlyStopping(metric="loss", mode="min", patience=2, second_metric="accuracy")
    fresh.load_state_dict(es.state_dict())
    assert (fresh.best, fresh.second_best, fresh.best_step, fresh.bad_evals) == (0.9, 0.2, 2, 1)
    missing = EarlyStopping(metric="loss", mode="min", second_metric="f1")
    with pytest.raises(ValueError, match="second_metric"):
        _fit([1.0], [0.1], missing)
    with pytest.raises(ValueError, match="second_mode"):
        EarlyStopping(second_metric="accuracy", second_mode="up")
