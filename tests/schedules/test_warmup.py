"""Warm-ups and warm-up + decay compositions against their closed forms (NumPy / math written out here).

References: linear ramp s + (1 - s)(t + 1)/W (Goyal et al. 2017, with s = 0); geometric ramp s^(1 - (t + 1)/W);
after the warm-up the decay's own formula evaluated at (t - W, T - W).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tricklab.errors import UnknownNameError
from tricklab.schedules import SCHEDULES, warmup_then
from tricklab.schedules.warmup import exponential_warmup, linear_warmup


def test_linear_warmup_closed_form() -> None:
    W = 8
    t = np.arange(W)
    np.testing.assert_allclose([linear_warmup(i, W) for i in t], (t + 1) / W, rtol=1e-15)
    np.testing.assert_allclose([linear_warmup(i, W, start=0.2) for i in t], 0.2 + 0.8 * (t + 1) / W, rtol=1e-15)


def test_exponential_warmup_closed_form_is_geometric() -> None:
    W, s = 10, 1e-3
    t = np.arange(W)
    ref = s ** (1 - (t + 1) / W)
    np.testing.assert_allclose([exponential_warmup(i, W, s) for i in t], ref, rtol=1e-13)
    # geometric: a constant ratio s^(-1/W) between consecutive steps, ending at 1
    np.testing.assert_allclose(ref[1:] / ref[:-1], s ** (-1 / W), rtol=1e-12)
    assert exponential_warmup(W - 1, W, s) == pytest.approx(1.0)


@pytest.mark.parametrize("warmup", ["linear", "exponential"])
def test_warmup_then_cosine(warmup: str) -> None:
    T, W = 40, 6
    for t in range(T + 1):
        if t < W:
            ref = (t + 1) / W if warmup == "linear" else 0.01 ** (1 - (t + 1) / W)
        else:
            ref = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
        got = warmup_then(t, T, decay="cosine", warmup=warmup, warmup_steps=W, min_factor=0.1)
        assert got == pytest.approx(ref, rel=1e-12), t


@pytest.mark.parametrize("decay,args,ref", [
    ("linear", {}, lambda u, D: 1 - u / D),
    ("step", {"step_size": 5, "gamma": 0.5}, lambda u, D: 0.5 ** (u // 5)),
    ("multistep", {"milestones": [4, 9], "gamma": 0.1}, lambda u, D: 0.1 ** ((u >= 4) + (u >= 9))),
    ("exponential", {"gamma": 0.9}, lambda u, D: 0.9 ** u),
    ("polynomial", {"power": 3.0}, lambda u, D: (1 - u / D) ** 3),
    ("constant", {}, lambda u, D: 1.0),
])
def test_registered_warmup_decays_closed_form(decay, args, ref) -> None:
    T, W = 30, 5
    fn = SCHEDULES.get(f"warmup_{decay}" if decay != "constant" else "warmup_then")
    extra = {"decay": "constant"} if decay == "constant" else {}
    for t in range(T + 1):
        expect = (t + 1) / W if t < W else ref(t - W, T - W)
        assert fn(t, T, warmup_steps=W, **extra, **args) == pytest.approx(expect, rel=1e-12, abs=1e-15), t


def test_warmup_cosine_keeps_its_original_definition() -> None:
    """The pre-existing 'warmup_cosine' (linear (t+1)/W then cosine over T - W) is unchanged."""
    T, W = 20, 4
    f = SCHEDULES.get("warmup_cosine")
    for t in range(T):
        ref = (t + 1) / W if t < W else 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
        assert f(t, T, warmup_steps=W) == pytest.approx(ref, rel=1e-12)


def test_warmup_edge_cases_and_errors() -> None:
    assert warmup_then(0, 10, warmup_steps=0) == 1.0  # no warm-up: the decay from its start
    assert warmup_then(10, 10, warmup_steps=10) == 1.0  # warm-up as long as the run: a 1-step decay
    with pytest.raises(UnknownNameError, match="cosine"):
        warmup_then(0, 10, decay="cosin")
    with pytest.raises(UnknownNameError, match="linear"):
        warmup_then(0, 10, warmup="quadratic")
    with pytest.raises(ValueError):
        warmup_then(0, 10, warmup="exponential", warmup_start=0.0)
    with pytest.raises(TypeError):
        warmup_then(20, 10, warmup_steps=2, bogus=1)
