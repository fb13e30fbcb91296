"""Composable training techniques, one file each, registered by name for recipes.

Each has a functional core usable in any loop (e.g. ``ema_update_``, ``update_scale``) and a Technique shell
that declares its events and state slots (see ``tricklab.train.technique``).
"""

from __future__ import annotations

from tricklab.registry import Registry
from tricklab.techniques.bootstrap_loss import BootstrapLoss
from tricklab.techniques.checkpointing import Checkpointing
from tricklab.techniques.cutmix import CutMix
from tricklab.techniques.cutout import Cutout
from tricklab.techniques.diagnostics import Diagnostics
from tricklab.techniques.dropblock_schedule import DropBlockSchedule
from tricklab.techniques.early_stopping import EarlyStopping
from tricklab.techniques.ema import EMA, ema_update_
from tricklab.techniques.focal_loss import FocalLoss
from tricklab.techniques.grad_accumulation import GradAccumulation
from tricklab.techniques.grad_clip import GradClip
from tricklab.techniques.label_smoothing import LabelSmoothing
from tricklab.techniques.lr_schedule import LRSchedule
from tricklab.techniques.lsuv import LSUV
from tricklab.techniques.metrics_log import MetricsLog
from tricklab.techniques.mix import Mix
from tricklab.techniques.mixup import Mixup
from tricklab.techniques.mixed_precision import MixedPrecision
from tricklab.techniques.multi_scale import MultiScale
from tricklab.techniques.nan_guard import NanGuard
from tricklab.techniques.progress import Progress
from tricklab.techniques.random_erasing import RandomErasing
from tricklab.techniques.random_flip import RandomFlip
from tricklab.techniques.random_shift import RandomShift
from tricklab.techniques.grad_centralization import GradCentralization
from tricklab.techniques.sam import SAMTechnique
from tricklab.techniques.swa import SWA, swa_update_
from tricklab.techniques.weight_penalty import WeightPenalty
from tricklab.train.technique import Technique

TECHNIQUES: Registry[type[Technique]] = Registry("technique")
for _cls in (MixedPrecision, GradAccumulation, GradClip, NanGuard, EMA, EarlyStopping, LabelSmoothing,
             LRSchedule, Checkpointing, MetricsLog, Progress, SWA, SAMTechnique, GradCentralization,
             FocalLoss, WeightPenalty, BootstrapLoss, DropBlockSchedule, Mixup, CutMix, Mix, Cutout, RandomErasing,
             RandomShift, RandomFlip, LSUV, Diagnostics, MultiScale):
    TECHNIQUES.register(_cls.name, _cls)

__all__ = ["EMA", "LSUV", "BootstrapLoss", "Diagnostics", "CutMix", "Cutout", "DropBlockSchedule", "FocalLoss", "Mix", "Mixup", "MultiScale",
           "RandomErasing", "RandomFlip", "RandomShift", "WeightPenalty", "TECHNIQUES", "Checkpointing", "EarlyStopping", "GradAccumulation", "GradClip", "LRSchedule",
           "LabelSmoothing", "MetricsLog", "MixedPrecision", "NanGuard", "Progress", "SAMTechnique", "GradCentralization", "SWA", "ema_update_", "swa_update_"]
