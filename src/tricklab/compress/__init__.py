"""Compression and deployment on any ``nn.Module``: pruning (unstructured and structured), lottery tickets,
quantization, distillation and export.

Submodules: ``pruning`` (magnitude masks, the Zhu & Gupta schedule), ``channels`` (structured channel pruning
that removes channels for real). Optional extras (torchao, onnx, onnxruntime) are imported only where used.
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
