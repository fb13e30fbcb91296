"""Issue 21's paradigms as lab loop tasks. Reference: each paradigm's run function called directly with the
same config and seed gives the numbers the lab stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.paradigms.continual.run import ContinualConfig, run_continual
from tricklab.paradigms.meta.run import MetaConfig, run_meta

pytest.importorskip("mnist1d")


@pytest.mark.parametrize(("task", "config", "fn", "args"), [
    ("mnist1d-meta", MetaConfig, run_meta, {"method": "protonets", "meta_steps": 3, "test_episodes": 10,
                                            "eval_every": 3, "eval_episodes": 5, "train_eval_episodes": 5}),
    ("mnist1d-continual", ContinualConfig, run_continual, {"method": "ewc", "steps_per_task": 5}),
])
def test_paradigm_task_stores_what_its_run_function_returns(tmp_path: Path, task: str, config: type, fn: object,
                                                           args: dict) -> None:
    recipe = load_recipe(None, ["techniques=[]", f"task={task}", f"task_args={args}", "seed=2"])
    summary = run(recipe, tmp_path / "run").summary
    direct = fn(config(**args), seed=2).metrics  # type: ignore[operator]
    assert summary.task_kind == "loop"
    for m in summary.metrics:
        if m.source == "test" and m.kind != "timing" and m.name in direct:
            assert summary.test.value(m.name) == pytest.approx(direct[m.name], rel=1e-9, nan_ok=True), m.name


def test_every_loop_task_builds_its_default_config_and_declares_metrics() -> None:
    from tricklab.lab.build import validate
    from tricklab.lab.tasks import TASKS, LoopTask

    loops = [n for n in TASKS.names() if isinstance(TASKS.get(n), LoopTask)]
    assert {"mnist1d-uncertainty", "mnist1d-meta", "rl-ppo", "selfsup", "fashion-mnist-vae", "mnist1d-lottery",
            "fashion-collage-detr"} <= set(loops)
    for name in loops:
        task = TASKS.get(name)
        recipe = load_recipe(None, ["techniques=[]", f"task={name}"])
        assert validate(recipe) is task  # the default task_args build a valid config
        assert task.metrics and all(m.key for m in task.metrics), name
