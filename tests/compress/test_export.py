"""ONNX export (tricklab.compress.export). Reference: the PyTorch model's outputs (ONNX Runtime must agree within
1e-5 at batch sizes other than the export example's), for plain, pruned and channel-pruned models; the exported
graph's gradient-free forward is all ONNX has, so outputs are what is compared."""

from __future__ import annotations

import pytest
import torch

from tricklab.compress.channels import prune_channels
from tricklab.compress.pruning import magnitude_prune_
from tricklab.errors import UserError
from tricklab.models import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tricklab.compress.export import OnnxModel, check_export, export_onnx  # noqa: E402

CASES = {"mlp": (40,), "cnn2d": (1, 28, 28)}  # the paper CNN is exported in the pruning test


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_outputs_equal_pytorch_within_1e5(name: str, tmp_path) -> None:
    shape = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    path = export_onnx(model, torch.randn(2, *shape), tmp_path / f"{name}.onnx")
    ort = OnnxModel(path)
    for batch in (1, 64):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            ref = model(x)
        out = ort(x)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert check_export(model, ort, torch.randn(16, *shape)) <= 1e-5


def test_pruned_and_channel_pruned_models_export(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", (40,), 10).eval()
    magnitude_prune_(model, 0.5)  # mask buffers are folded in before export
    small, _ = prune_channels(model, 0.5)
    for tag, m in (("masked", model), ("small", small)):
        ort = OnnxModel(export_onnx(m, torch.randn(2, 40), tmp_path / f"{tag}.onnx"))
        x = torch.randn(8, 40)
        with torch.no_grad():
            torch.testing.assert_close(ort(x), m(x), rtol=0, atol=1e-5)


def test_a_failed_export_leaves_no_file_and_says_why(tmp_path) -> None:
    class Bad(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: not exportable
                return x
            return -x

    target = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match="ONNX export of Bad failed"):
        export_onnx(Bad(), torch.randn(2, 3), target)
    assert list(tmp_path.iterdir()) == []


def test_export_run_writes_a_checked_onnx_file_and_int8_weights(tmp_path) -> None:
    """Reference: the saved run's model (its outputs for ONNX, its weights' element count for int8)."""
    import yaml
    from safetensors.torch import load_file, save_file

    from tricklab.compress.export import export_run

    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=16)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"task": "digits", "model": {"name": "mlp",
                                                                                      "args": {"hidden": 16}}}))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    info = export_run(tmp_path, "onnx")
    assert info["max_abs_diff"] <= 1e-5 and (tmp_path / "model.onnx").is_file()
    info = export_run(tmp_path, "torch", quantize="int8")
    saved = load_file(info["path"])
    assert saved["net.0.weight_q"].dtype == torch.int8 and saved["net.0.weight_q"].shape == model.net[0].weight.shape
    assert info["bytes"] < 0.5 * info["fp32_bytes"]
    with pytest.raises(UserError, match="int8 ONNX export is not supported"):
        export_run(tmp_path, "onnx", quantize="int8")
    with pytest.raises(UserError, match="format"):
        export_run(tmp_path, "tflite")
