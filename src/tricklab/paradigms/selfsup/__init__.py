"""Self-supervised pretraining of a backbone without labels: SimCLR, MoCo v2, BYOL (:mod:`.methods`), and
``run_selfsup`` (:mod:`.run`), scored by a linear probe and k-NN (:mod:`tricklab.transfer.probe`)."""

from tricklab.paradigms.selfsup.methods import BYOL, MoCo, SimCLR, byol_loss, byol_tau, enqueue_, moco_logits

__all__ = ["BYOL", "MoCo", "SimCLR", "byol_loss", "byol_tau", "enqueue_", "moco_logits"]
