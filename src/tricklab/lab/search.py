"""`tricklab search`: the best combination of compatible techniques under a fixed budget, then a check that
its gain survives fresh seeds.

Each listed technique is an on/off switch (a boolean categorical of the tuner, :mod:`tricklab.lab.tune`),
optionally with arguments tuned beside it (``--space`` keys ``techniques.<name>.<arg>``). A sampled set that
the trainer's conflict check refuses (two target mixers, two weight averagers, two loss replacers: see
:func:`tricklab.train.plan`) is pruned before it runs and costs nothing; a set already measured is not run
again. Every trial runs at the same budget on one seed (:data:`tricklab.lab.tune.TRIAL_SEED`) and is scored
on the validation split when there is one.

The winner is then confirmed in a normal ablation (:mod:`tricklab.lab.ablate`: same store, report and
cards) against the baseline over FRESH seeds (0..K-1, which the search never used), on the recipe as given
(without the validation split carved for the search), with paired 95% intervals: the search's best score
is biased upwards by the selection, the confirmation is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import UserError
from tricklab.lab.ablate import make_plan, run_ablation, technique_label, write_outputs
from tricklab.lab.backends import Backend
from tricklab.lab.recipe import Recipe, TechniqueSpec, recipe_from_dict
from tricklab.lab.space import Param, Space, check_space, technique_switch
from tricklab.lab.summary import AblationSummary
from tricklab.lab.tune import Objective, StudyResult, TuneConfig, optimize

__all__ = ["SearchResult", "confirm", "search_space", "winner_techniques", "run_search"]


@dataclass
class SearchResult:
    study: StudyResult
    winner: list[TechniqueSpec]  # the best technique set (with its sampled arguments)
    confirmation: AblationSummary | None  # None when no confirmation ran (K = 0, or the baseline won)
    confirm_dir: Path | None


def search_space(base: Recipe, techniques: Sequence[TechniqueSpec], extra: Sequence[Param] = ()) -> Space:
    """One switch per technique (its listed arguments applied when on), plus ``extra`` ranges; checked."""
    names = [t.name for t in techniques]
    if len(techniques) < 2:
        raise UserError("--techniques: a search needs at least two techniques to combine")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"--techniques: {dupes} listed twice; a search switches each technique on or off once")
    already = sorted(set(names) & {t.name for t in base.techniques})
    if already:
        raise UserError(f"--techniques: {already} already in the recipe; the search adds techniques to it")
    for p in extra:
        name = p.key.split(".")[1] if p.key.startswith("techniques.") else None
        if name is None or name not in names or p.key.count(".") != 2:
            raise UserError(f"space {p.key}: a search's space tunes arguments of the listed techniques "
                            f"(techniques.<name>.<arg>, name one of {names})")
    switches = [technique_switch(t.name, t.args) for t in techniques]
    return check_space(Space((*switches, *extra)), base)


def winner_techniques(space: Space, values: dict[str, Any]) -> list[TechniqueSpec]:
    """The techniques a set of sampled values switches on, with their arguments, in the listed order."""
    d = space.apply({"techniques": []}, values)
    return [TechniqueSpec(t["name"], dict(t.get("args") or {})) for t in d["techniques"]]


def confirm(base: Recipe, winner: list[TechniqueSpec], seeds: list[int], out: Path, jobs: int,
            say: Callable[[str], Any], backend: Backend | None = None) -> AblationSummary:
    """The winner against ``base`` over ``seeds`` in a normal ablation in ``out`` (store, report, cards)."""
    plan = make_plan(base, [], [winner], seeds)
    say(f"confirming {'+'.join(technique_label(s) for s in winner)} against the baseline over fresh seeds "
        f"{seeds} into {out}")
    summary = run_ablation(plan, out, jobs=jobs, say=say, backend=backend)
    write_outputs(out, out / "cards")
    return summary


def run_search(base: Recipe, trial_base: Recipe, space: Space, objective: Objective, cfg: TuneConfig, out: Path,
               confirm_seeds: list[int], say: Callable[[str], Any] = print,
               backend_factory: Callable[[], Backend | None] = lambda: None) -> SearchResult:
    """Search on ``trial_base`` (the recipe with the search's validation split), then confirm the winner on
    ``base`` over ``confirm_seeds`` (none: no confirmation)."""
    if cfg.seed in confirm_seeds:
        raise UserError(f"--seeds-confirm: the confirmation seeds {confirm_seeds} include the search's trial "
                        f"seed {cfg.seed}; they must be fresh")
    result = optimize(trial_base, space, objective, cfg, out, say, backend_factory())
    if result.best_values is None:
        return SearchResult(result, [], None, None)
    winner = winner_techniques(space, result.best_values)
    if not winner:
        say("the baseline (no technique switched on) scored best: nothing to confirm")
        return SearchResult(result, [], None, None)
    if not confirm_seeds:
        return SearchResult(result, winner, None, None)
    base = recipe_from_dict({**base.to_dict(), "budget": trial_base.to_dict()["budget"]})
    summary = confirm(base, winner, confirm_seeds, out / "confirm", cfg.jobs, say, backend_factory())
    return SearchResult(result, winner, summary, out / "confirm")
