"""Vision architectures built from :mod:`tricklab.layers`: ResNet, MobileNetV2, Xception, ConvNeXt, ViT, Swin,
a CNN-Transformer hybrid and DETR (docs/models/vision/).

Importing this package registers the classifiers in :data:`tricklab.models.MODELS`: ``resnet``,
``mobilenetv2``, ``xception``, ``convnext``, ``vit``, ``swin``, ``hybrid``. Every classifier takes images of any
size at least its total stride (global pooling; ViT resamples its position table; Swin pads to window
multiples), which multi-scale training needs. DETR (:mod:`tricklab.models.vision.detr`) is a detector, built
with :func:`~tricklab.models.vision.detr.detr`, not a classifier, so it is not in the classifier registry.
"""

from __future__ import annotations

from tricklab.models.vision import convnext, hybrid, mobilenetv2, resnet, swin, vit, xception

__all__ = ["convnext", "hybrid", "mobilenetv2", "resnet", "swin", "vit", "xception"]
