"""DETR (tricklab.models.vision.detr): output structure and shapes, finite gradients to every parameter through
the set loss, compile equals eager, the encoder/decoder layers against a hand-written reference, a tiny overfit
that brings the set loss down, and the predict/metric functions the trainer uses."""

from __future__ import annotations

import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.evaluate.detection import decode_set_predictions, set_prediction_metrics
from tricklab.losses.detection import set_loss
from tricklab.models.vision.detr import DETRDecoderLayer, DETREncoderLayer, detr, detr_predict, pack_predictions


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return detr(in_channels=1, num_classes=3, backbone_widths=(4, 8), dim=16, heads=2, enc_layers=1, dec_layers=2,
                num_queries=5, hidden=16)


def _targets() -> torch.Tensor:
    t = torch.full((2, 3, 5), -1.0)
    t[0, 0] = torch.tensor([1, 0.3, 0.4, 0.2, 0.3])
    t[0, 1] = torch.tensor([2, 0.7, 0.7, 0.3, 0.2])
    t[1, 0] = torch.tensor([0, 0.5, 0.5, 0.4, 0.4])
    return t


def test_outputs_and_shapes_at_several_sizes() -> None:
    model = _tiny().eval()
    for size in (16, 24, 32):
        out = model(torch.randn(2, 1, size, size))
        assert out["logits"].shape == (2, 5, 4) and out["boxes"].shape == (2, 5, 4)
        assert len(out["aux"]) == 1 and out["aux"][0]["logits"].shape == (2, 5, 4)
        assert ((out["boxes"] > 0) & (out["boxes"] < 1)).all()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(2, 256))


def test_every_parameter_gets_a_finite_gradient_through_the_set_loss() -> None:
    model = _tiny().train()
    loss = set_loss(model(torch.randn(2, 1, 16, 16)), _targets())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_compile_matches_eager() -> None:
    model = _tiny().eval()
    x = torch.randn(2, 1, 16, 16)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        a, b = model(x), compiled(x)
    torch.testing.assert_close(b["logits"], a["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-5, atol=1e-5)


def test_layers_add_positions_to_queries_and_keys_only() -> None:
    """Reference: the layers written out with the attention modules' SDPA path (positions on q and k, not v)."""
    torch.manual_seed(0)
    enc = DETREncoderLayer(8, 2, 16).eval()
    x, pos = torch.randn(2, 6, 8), torch.randn(6, 8)
    h = enc.norm1(x)
    y = x + enc.attn(h + pos, h + pos, h)
    torch.testing.assert_close(enc(x, pos), y + enc.ffn(enc.norm2(y)))
    dec = DETRDecoderLayer(8, 2, 16).eval()
    t, qpos, mem = torch.randn(2, 3, 8), torch.randn(3, 8), torch.randn(2, 6, 8)
    h = dec.norm1(t)
    u = t + dec.self_attn(h + qpos, h + qpos, h)
    u = u + dec.cross_attn(dec.norm2(u) + qpos, mem + pos, mem)
    torch.testing.assert_close(dec(t, qpos, mem, pos), u + dec.ffn(dec.norm3(u)))
    # decoder self-attention is not causal: the first query sees the last one
    t2 = t.clone()
    t2[:, -1] += torch.randn(2, 8)  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(dec(t, qpos, mem, pos)[:, 0], dec(t2, qpos, mem, pos)[:, 0])


def test_overfits_two_images() -> None:
    model = _tiny().train()
    x, t = torch.rand(2, 1, 16, 16), _targets()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = set_loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def test_predict_and_metric_functions() -> None:
    model = _tiny().eval()
    x, t = torch.rand(2, 1, 16, 16), _targets()
    packed, targets = detr_predict(model, (x, t), batch_size=1)
    assert packed.shape == (2, 5, 4 + 4) and targets is t
    with torch.no_grad():
        torch.testing.assert_close(packed, pack_predictions(model(x)))
    m = set_prediction_metrics(packed, t)
    assert set(m) == {"map", "map_50", "map_75"} and 0.0 <= m["map"] <= m["map_50"] <= 1.0
    # a perfect set predictor: each true box predicted by one confident query, the rest "no object"
    logits = torch.full((2, 5, 4), -10.0)
    logits[..., 3] = 10.0
    boxes = torch.full((2, 5, 4), 0.5)
    for b in range(2):
        for j, row in enumerate(t[b]):
            if row[0] >= 0:
                logits[b, j, int(row[0])], logits[b, j, 3] = 10.0, -10.0
                boxes[b, j] = row[1:]
    perfect = set_prediction_metrics(torch.cat([logits, boxes], -1), t)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    dets = decode_set_predictions(logits, boxes)
    assert dets[0]["labels"][0] == 1 and dets[0]["scores"][0] > 0.99
    torch.testing.assert_close(dets[1]["boxes"][0], torch.tensor([0.3, 0.3, 0.7, 0.7]))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        detr(dim=30, heads=4)
    with pytest.raises(ConfigError, match="num_queries"):
        detr(num_queries=0)


def test_run_detr_returns_the_declared_metrics_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The loop-task run function (tricklab.models.vision.detr_task): two steps on a tiny collage set give every
    declared metric in [0, 1], history rows with integer steps, the progress rows, and a run resumed from its
    step-2 checkpoint with a longer budget continues from step 2 (reference: the checkpoint's step)."""
    from tricklab.models.vision.detr_task import DETECTION_METRICS, DetrConfig, run_detr

    model = {"backbone_widths": [4, 8], "dim": 16, "heads": 2, "enc_layers": 1, "dec_layers": 1, "num_queries": 5,
             "hidden": 16}
    config = DetrConfig(num_train=16, num_test=4, eval_images=4, canvas=32, max_objects=2, steps=2, batch_size=8,
                        warmup_steps=1, eval_every=2, checkpoint_every=2, model=model)
    rows: list[dict] = []
    result = run_detr(config, seed=0, run_dir=tmp_path, progress=rows.append)
    assert {m.key for m in DETECTION_METRICS} <= set(result.metrics)
    assert all(0.0 <= result.metrics[m.key] <= 1.0 for m in DETECTION_METRICS)
    assert rows and all(isinstance(r["step"], int) for r in result.history) and result.history[-1]["step"] == 2
    longer = DetrConfig(**{**config.__dict__, "steps": 3})
    resumed = run_detr(longer, seed=0, run_dir=tmp_path, resume=True)
    assert [r["step"] for r in resumed.history if "train_loss" in r][-1] == 3
    with pytest.raises(ConfigError, match="steps"):
        DetrConfig(steps=0)
