"""Loss functions, each a pure function on tensors plus a thin ``nn.Module``, registered by name.

``LOSSES`` maps a name to the module class; every class has a classmethod ``example(generator)`` returning a
:class:`~tricklab.losses._common.LossExample` (inputs, constructor arguments, which inputs are trainable and the
``reduction="none"`` shape) that tests/contracts/test_losses.py sweeps. Every loss takes
``reduction="mean" | "sum" | "none"``. Where torch already has the loss (triplet margin, label-smoothed
cross-entropy) the entry is torch's own class.
"""

from __future__ import annotations

from torch import nn

from tricklab.losses._common import REDUCTIONS, LossExample
from tricklab.losses.bootstrapping import (
    DEFAULT_BETA,
    HardBootstrapLoss,
    SoftBootstrapLoss,
    bootstrap_loss,
    hard_bootstrap_loss,
    soft_bootstrap_loss,
)
from tricklab.losses.contrastive import (
    BatchHardTripletLoss,
    ContrastiveLoss,
    TripletLoss,
    batch_hard_mine,
    batch_hard_triplet_loss,
    contrastive_loss,
    pairwise_distances,
    triplet_margin_loss,
)
from tricklab.losses.dice import SoftDiceLoss, soft_dice_loss
from tricklab.losses.distillation import DistillationLoss, distillation_loss
from tricklab.losses.focal import BinaryFocalLoss, FocalLoss, focal_loss, sigmoid_focal_loss
from tricklab.losses.gce import GeneralizedCrossEntropy, generalized_cross_entropy
from tricklab.losses.label_smoothing import LabelSmoothingCrossEntropy, label_smoothing_cross_entropy
from tricklab.losses.nce import InfoNCELoss, NTXentLoss, info_nce, nt_xent
from tricklab.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")
for _name, _cls, _summary in (
    ("focal", FocalLoss, "Multi-class focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017)"),
    ("binary_focal", BinaryFocalLoss, "Sigmoid focal loss alpha_t (1 - p_t)^gamma BCE per logit (Lin et al. 2017)"),
    ("soft_dice", SoftDiceLoss, "Soft Dice loss 1 - mean_c 2|P G| / (|P|^2 + |G|^2) (V-Net, Milletari et al. 2016)"),
    ("contrastive", ContrastiveLoss, "Pair loss (1-Y) D^2/2 + Y max(0, m - D)^2/2 (Hadsell et al. 2006)"),
    ("triplet_margin", TripletLoss, "Triplet loss max(0, d(a,p) - d(a,n) + m): torch's nn.TripletMarginLoss"),
    ("batch_hard_triplet", BatchHardTripletLoss, "Triplet loss with batch-hard mining (Hermans et al. 2017)"),
    ("nt_xent", NTXentLoss, "SimCLR's NT-Xent over 2N views with temperature (Chen et al. 2020)"),
    ("info_nce", InfoNCELoss, "InfoNCE: pick the positive key among negatives (van den Oord et al. 2018)"),
    ("distillation", DistillationLoss, "Knowledge distillation a T^2 KL(teacher_T || student_T) + (1-a) CE "
                                       "(Hinton et al. 2015)"),
    ("label_smoothing_ce", LabelSmoothingCrossEntropy, "Label-smoothed cross-entropy: torch's "
                                                       "CrossEntropyLoss(label_smoothing=eps) (Szegedy et al. 2016)"),
    ("soft_bootstrap", SoftBootstrapLoss, "Soft bootstrapping for noisy labels, CE vs beta y + (1-beta) p "
                                          "(Reed et al. 2015)"),
    ("hard_bootstrap", HardBootstrapLoss, "Hard bootstrapping for noisy labels, CE vs beta y + (1-beta) "
                                          "onehot(argmax p) (Reed et al. 2015)"),
    ("gce", GeneralizedCrossEntropy, "Generalized cross-entropy (1 - p_y^q) / q for noisy labels, optionally "
                                     "truncated (Zhang & Sabuncu 2018)"),
):
    LOSSES.register(_name, _cls, summary=_summary)

__all__ = [
    "DEFAULT_BETA", "LOSSES", "REDUCTIONS", "BatchHardTripletLoss", "BinaryFocalLoss", "ContrastiveLoss",
    "DistillationLoss", "FocalLoss", "GeneralizedCrossEntropy",
    "HardBootstrapLoss", "InfoNCELoss", "LabelSmoothingCrossEntropy", "LossExample",
    "NTXentLoss", "SoftBootstrapLoss", "SoftDiceLoss", "TripletLoss", "batch_hard_mine", "batch_hard_triplet_loss",
    "bootstrap_loss", "contrastive_loss", "distillation_loss", "focal_loss", "generalized_cross_entropy",
    "hard_bootstrap_loss", "info_nce",
    "label_smoothing_cross_entropy", "nt_xent", "pairwise_distances", "sigmoid_focal_loss", "soft_bootstrap_loss",
    "soft_dice_loss", "triplet_margin_loss",
]
