"""Transfer learning on any nn.Module: freezing and discriminative learning rates, bottleneck adapters, LoRA
(with merge-back), and gradient reversal for domain-adversarial training."""

from tricklab.transfer.adapters import Adapted, BottleneckAdapter, inject_adapters
from tricklab.transfer.finetune import count_parameters, discriminative_param_groups, freeze_except
from tricklab.transfer.lora import LoRAConv, LoRALinear, inject_lora, lora_delta, merge_lora, unmerge_lora

__all__ = [
    "Adapted", "BottleneckAdapter", "LoRAConv", "LoRALinear", "count_parameters", "discriminative_param_groups",
    "freeze_except", "inject_adapters", "inject_lora", "lora_delta", "merge_lora", "unmerge_lora",
]
