"""The RL paradigm's contract with the lab (PARADIGMS.md): every reported number is declared once as the lab's
``MetricSpec`` (``tricklab.evaluate.declared``), and every run function has the loop signature
``run_x(config, *, seed, run_dir, progress, resume) -> ParadigmResult`` that ``LoopTask`` calls.

Reference: the declared-metric class itself and ``inspect.signature``; that each run reports exactly its declared
keys is checked by a short run in each algorithm's own test file."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from tricklab.evaluate.declared import MetricSpec
from tricklab.rl.alphazero import AlphaZeroConfig, run_alphazero
from tricklab.rl.metrics import ALPHAZERO_METRICS, EPISODE_METRICS, PREFERENCE_METRICS
from tricklab.rl.ppo import PPOConfig, run_ppo
from tricklab.rl.preferences import PreferenceConfig, run_preferences
from tricklab.rl.rainbow import RainbowConfig, run_rainbow
from tricklab.rl.sac import SACConfig, run_sac

LISTS = {"episode": EPISODE_METRICS, "preference": PREFERENCE_METRICS, "alphazero": ALPHAZERO_METRICS}
RUNS = {"ppo": (run_ppo, PPOConfig), "sac": (run_sac, SACConfig), "rainbow": (run_rainbow, RainbowConfig),
        "alphazero": (run_alphazero, AlphaZeroConfig), "preferences": (run_preferences, PreferenceConfig)}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_metrics_are_the_labs_metric_spec(name: str) -> None:
    specs = LISTS[name]
    assert specs and all(type(m) is MetricSpec for m in specs)
    keys = [m.key for m in specs]
    assert len(keys) == len(set(keys)), f"{name}: a key is declared twice"
    for m in specs:
        format(1234.5, m.fmt)  # a format spec the report can use
        if m.unit == "s":  # timings are measured on shared cores: shown, never judged
            assert not m.verdict, m.key


@pytest.mark.parametrize("name", sorted(RUNS))
def test_run_functions_have_the_loop_signature(name: str) -> None:
    fn, cfg_cls = RUNS[name]
    params = inspect.signature(fn).parameters
    first = next(iter(params.values()))
    assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for key in ("seed", "run_dir", "progress", "resume"):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
    assert params["run_dir"].default is None and params["progress"].default is None
    assert params["resume"].default is False
    assert dataclasses.is_dataclass(cfg_cls)
    cfg_cls()  # the defaults are a valid configuration
