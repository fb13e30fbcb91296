"""Compression and deployment on any ``nn.Module``: pruning (unstructured and structured), lottery tickets,
quantization, distillation and export.

Submodules (docs/compress/): ``pruning`` (magnitude masks as buffers, the Zhu & Gupta schedule), ``channels``
(structured channel pruning that removes channels for real), ``lottery`` (iterative magnitude pruning with
rewinding, and its controls), ``quantize`` (static int8, QAT, dynamic int8 on torchao), ``distill`` (a teacher
from a saved run, FitNets hints), ``export`` (ONNX and ONNX Runtime, ``export_run``), ``metrics`` (size, sparsity,
latency as declared metrics). Optional extras (torchao: ``quant``; onnx, onnxscript, onnxruntime: ``export``) are
imported only where used.
"""

from __future__ import annotations

from tricklab.compress.pruning import (
    apply_masks_,
    magnitude_masks,
    magnitude_prune_,
    masks_of,
    prunable_layers,
    reapply_masks_,
    remove_masks_,
    sparsity_of,
    zhu_gupta_sparsity,
)

__all__ = ["apply_masks_", "magnitude_masks", "magnitude_prune_", "masks_of", "prunable_layers", "reapply_masks_",
           "remove_masks_", "sparsity_of", "zhu_gupta_sparsity"]
