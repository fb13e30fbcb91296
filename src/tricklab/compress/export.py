"""Export a trained model to ONNX and run it with ONNX Runtime (the ``export`` extra: onnx, onnxscript,
onnxruntime).

:func:`export_onnx` writes the model with ``torch.onnx.export`` (the dynamo exporter, opset 20) with a dynamic
batch dimension, atomically (a temporary file renamed into place: an existing file is never left half
written), then checks it with ``onnx.checker``. :class:`OnnxModel` runs the file with ONNX Runtime on the CPU
(one intra-op thread unless told otherwise) and takes and returns torch tensors, so it drops into code that calls
a module. :func:`check_export` compares the two on given inputs and raises when they differ by more than the
tolerance. Masks of a pruned model are folded into its weights first (they are buffers the graph does not need).
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.compress.distill import load_run_model
from tricklab.compress.pruning import remove_masks_
from tricklab.compress.quantize import quantize_static
from tricklab.errors import UserError
from tricklab.evaluate.cost import model_size_bytes
from tricklab.io import atomic_write_bytes

__all__ = ["export_onnx", "OnnxModel", "check_export", "export_run", "OPSET", "FORMATS"]

FORMATS = ("onnx", "torch")

OPSET = 20


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"ONNX export needs {module}: pip install 'tricklab[export]'") from None


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (evaluation mode, masks folded in) as ONNX to ``path``, batch dimension dynamic; returns
    the path. ``example`` is one input batch (its shape past the batch dimension is fixed in the graph)."""
    onnx = _need("onnx")
    _need("onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = remove_masks_(copy.deepcopy(model)).eval()
    batch = torch.export.Dim("batch", min=1)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress chatter
            torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["output"],
                              dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
                              verbose=False)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, UserError):
            raise
        raise UserError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}") from e
    return path


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the CPU: ``OnnxModel(path)(x)`` -> torch tensor."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)


def check_export(model: nn.Module, onnx_model: OnnxModel, inputs: torch.Tensor, atol: float = 1e-5) -> float:
    """Max |ONNX Runtime - PyTorch| over ``inputs``; raises UserError when it exceeds ``atol``."""
    model = remove_masks_(copy.deepcopy(model)).eval()
    with torch.no_grad():
        ref = model(inputs)
    diff = float((onnx_model(inputs) - ref).abs().max())
    if not diff <= atol:
        raise UserError(f"the ONNX model differs from PyTorch by {diff:.3g} (> {atol:g}) on the check inputs")
    return diff


def export_run(run_dir: str | os.PathLike[str], fmt: str = "onnx", quantize: str | None = None,
               out: str | os.PathLike[str] | None = None, calibration_examples: int = 1000) -> dict[str, Any]:
    """Export the trained model of a finished run folder (the body of ``tricklab export RUN_DIR``).

    ``fmt="onnx"``: ``RUN_DIR/model.onnx`` (fp32), checked against PyTorch on 256 test examples (1e-5).
    ``fmt="torch"``: ``RUN_DIR/model.export.safetensors`` (masks folded in); with ``quantize="int8"``,
    ``RUN_DIR/model.int8.safetensors``, static int8 calibrated on the first ``calibration_examples`` training
    examples. Returns what was written: path, bytes, fp32 bytes, and the check's max difference (ONNX).
    """
    from safetensors.torch import save as st_save

    if fmt not in FORMATS:
        raise UserError(f"export format must be one of {list(FORMATS)}, got {fmt!r}")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize must be int8 (or absent), got {quantize!r}")
    if fmt == "onnx" and quantize:
        raise UserError("int8 ONNX export is not supported: export fp32 ONNX (ONNX Runtime is the fast path on the "
                        "CPU) or use --format torch --quantize int8 for the int8 weights")
    model, data = load_run_model(run_dir)
    if not hasattr(data, "x_train"):
        raise UserError(f"export needs an array data set for its example inputs; {run_dir}'s task has none")
    run_dir = Path(run_dir)
    info: dict[str, Any] = {"fp32_bytes": model_size_bytes(model)}
    if fmt == "onnx":
        path = Path(out) if out is not None else run_dir / "model.onnx"
        export_onnx(model, data.x_train[:2], path)
        info["max_abs_diff"] = check_export(model, OnnxModel(path), data.x_test[:256])
    else:
        if quantize == "int8":
            x = data.x_train[:calibration_examples]
            model = quantize_static(model, [x[i:i + 100] for i in range(0, len(x), 100)])
        else:
            model = remove_masks_(model)
        path = Path(out) if out is not None else run_dir / ("model.int8.safetensors" if quantize
                                                            else "model.export.safetensors")
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        atomic_write_bytes(path, st_save(state))
    info.update(path=str(path), bytes=path.stat().st_size, format=fmt, quantize=quantize)
    return info
