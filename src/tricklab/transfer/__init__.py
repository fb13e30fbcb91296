"""Transfer learning on any nn.Module: freezing and discriminative learning rates, bottleneck adapters, LoRA
(with merge-back), and gradient reversal for domain-adversarial training (DANN)."""

from tricklab.transfer.adapters import Adapted, BottleneckAdapter, inject_adapters
from tricklab.transfer.finetune import count_parameters, discriminative_param_groups, freeze_except
from tricklab.transfer.grl import DomainClassifier, GradientReversal, dann_lambda, dann_loss, grad_reverse
from tricklab.transfer.lora import LoRAConv, LoRALinear, inject_lora, lora_delta, merge_lora, unmerge_lora

__all__ = [
    "Adapted", "BottleneckAdapter", "DomainClassifier", "GradientReversal", "LoRAConv", "LoRALinear",
    "count_parameters", "dann_lambda", "dann_loss", "discriminative_param_groups", "freeze_except",
    "grad_reverse", "inject_adapters", "inject_lora", "lora_delta", "merge_lora", "unmerge_lora",
]
