"""Temperature, vector and matrix scaling. References: scipy.optimize (minimize_scalar on log T; L-BFGS-B with
the analytic gradient for vector scaling) on the NumPy NLL; a synthetic over-confident model whose true
temperature is known (labels drawn from softmax(z), the model reports 3 z); tricklab's ECE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import UserError
from tricklab.evaluate.calibration import expected_calibration_error
from tricklab.uncertainty.temperature import (
    MatrixScaler,
    TemperatureScaler,
    VectorScaler,
    fit_scaler,
    fit_temperature,
)

optimize = pytest.importorskip("scipy.optimize")


def _np_nll(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(1, keepdims=True)
    return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())


def _overconfident(n: int = 4000, c: int = 5, factor: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """True logits z; labels ~ softmax(z) (calibrated); the model reports factor * z (over-confident)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 1.5
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return factor * z, y


def test_temperature_matches_scipy_and_recovers_the_true_temperature() -> None:
    logits, y = _overconfident(n=20_000)
    t = fit_temperature(logits, y)
    zn, yn = logits.numpy(), y.numpy()
    ref = optimize.minimize_scalar(lambda s: _np_nll(zn / np.exp(s), yn), bounds=(-3, 3), method="bounded",
                                   options={"xatol": 1e-10})
    assert t == pytest.approx(float(np.exp(ref.x)), rel=1e-5)
    assert t == pytest.approx(3.0, rel=0.05)  # the model's logits were 3x the true ones


@pytest.mark.parametrize("factor", [3.0, 1.0, 0.4])
def test_accuracy_is_unchanged_exactly_and_nll_does_not_rise(factor: float) -> None:
    logits, y = _overconfident(factor=factor, seed=1)
    val, test = slice(0, 2000), slice(2000, None)
    scaler = TemperatureScaler()
    info = fit_scaler(scaler, logits[val], y[val])
    assert info["nll_after"] <= info["nll_before"]
    assert info["nll_before"] == pytest.approx(_np_nll(logits[val].numpy(), y[val].numpy()), rel=1e-12)
    assert info["nll_after"] == pytest.approx(_np_nll(logits[val].numpy() / scaler.temperature, y[val].numpy()),
                                              rel=1e-10)
    for part in (val, test):
        assert torch.equal(scaler.predict(logits[part]), logits[part].argmax(-1))
        probs = scaler.calibrated_probs(logits[part])
        acc_before = float((logits[part].argmax(-1) == y[part]).double().mean())
        acc_after = float((probs.argmax(-1) == y[part]).double().mean())
        assert acc_after == acc_before


def test_temperature_cuts_ece_on_an_overconfident_model() -> None:
    logits, y = _overconfident(n=8000, factor=3.0, seed=2)
    val, test = slice(0, 4000), slice(4000, None)
    scaler = TemperatureScaler().fit(logits[val], y[val])
    before = expected_calibration_error(torch.softmax(logits[test], -1), y[test])
    after = expected_calibration_error(scaler.calibrated_probs(logits[test]), y[test])
    assert after * 3 <= before, (before, after)


def test_vector_scaling_matches_scipy_lbfgsb() -> None:
    logits, y = _overconfident(n=3000, c=4, seed=3)
    logits = logits + torch.tensor([0.5, -0.3, 0.0, 0.8], dtype=torch.float64)  # a class bias to remove
    scaler = VectorScaler(4)
    info = fit_scaler(scaler, logits, y)
    zn, yn = logits.numpy(), y.numpy()
    onehot = np.eye(4)[yn]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:4], theta[4:]
        s = zn * w + b
        s = s - s.max(1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
        nll = float(-(np.log(p[np.arange(len(yn)), yn])).mean())
        d = (p - onehot) / len(yn)
        return nll, np.concatenate([(d * zn).sum(0), d.sum(0)])

    ref = optimize.minimize(f, np.concatenate([np.ones(4), np.zeros(4)]), jac=True, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
    assert info["nll_after"] == pytest.approx(ref.fun, rel=1e-7)
    # its gradient at the optimum is zero: check ours by autograd
    scaler.zero_grad()
    F.cross_entropy(scaler(logits), y).backward()
    assert float(scaler.w.grad.abs().max()) < 1e-6 and float(scaler.b.grad.abs().max()) < 1e-6


def test_richer_maps_fit_the_held_out_set_at_least_as_well() -> None:
    logits, y = _overconfident(n=3000, c=4, seed=4)
    nll_t = fit_scaler(TemperatureScaler(), logits, y)["nll_after"]
    nll_v = fit_scaler(VectorScaler(4), logits, y)["nll_after"]
    nll_m = fit_scaler(MatrixScaler(4), logits, y)["nll_after"]
    assert nll_m <= nll_v + 1e-9 and nll_v <= nll_t + 1e-9
    strong = MatrixScaler(4, l2=1e6).fit(logits, y)
    torch.testing.assert_close(strong.weight.detach(), torch.eye(4, dtype=torch.float64), atol=1e-3, rtol=0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(UserError, match="logits"):
        fit_temperature(torch.randn(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(UserError, match="targets"):
        fit_temperature(torch.randn(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="lie in"):
        fit_temperature(torch.randn(5, 3), torch.full((5,), 3))
    with pytest.raises(UserError, match="NaN"):
        fit_temperature(torch.full((5, 3), float("nan")), torch.zeros(5, dtype=torch.long))
    with pytest.raises(UserError, match="num_classes"):
        VectorScaler(1)
