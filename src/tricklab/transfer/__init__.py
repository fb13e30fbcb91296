"""Transfer learning on any nn.Module: freezing and discriminative learning rates, bottleneck adapters, LoRA
(with merge-back), linear probes and k-NN on frozen features, small backbones.

The learning settings built on these (self-supervised, semi-supervised, domain adaptation, few-/zero-shot, greedy
pretraining) live under :mod:`tricklab.paradigms`."""

from tricklab.transfer.adapters import Adapted, BottleneckAdapter, inject_adapters
from tricklab.transfer.finetune import count_parameters, discriminative_param_groups, freeze_except
from tricklab.transfer.from_run import backbone_from_run, load_run_model, replace_head
from tricklab.transfer.lora import LoRAConv, LoRALinear, inject_lora, lora_delta, merge_lora, unmerge_lora

__all__ = [
    "Adapted", "BottleneckAdapter", "LoRAConv", "LoRALinear", "count_parameters", "discriminative_param_groups",
    "backbone_from_run", "freeze_except", "inject_adapters", "inject_lora", "load_run_model", "lora_delta",
    "merge_lora", "replace_head", "unmerge_lora",
]
