"""Mirrors backend/operations.py: every Linear and Conv2d of a Forge model is a
``ForgeOperations`` layer whose ``forward`` takes its weight from ``get_weight_and_bias`` on each
call, which merges the layer's online LoRA patches (``forge_online_loras``, set by
``LoraLoader.refresh`` in online mode) into a new weight with ``merge_lora_to_weight``, imported
here by name from backend/patcher/lora.py. ``forge_layers`` gives a built model these classes
(Forge builds its models with them: ``using_forge_operations``). CUDA streams and the manual
cast of low-bit weights are not mirrored (no GPU)."""

import torch

from backend.patcher.lora import merge_lora_to_weight


def get_weight_and_bias(layer, weight_args=None, bias_args=None, weight_fn=None, bias_fn=None):
    scale_weight = getattr(layer, "scale_weight", None)
    patches = getattr(layer, "forge_online_loras", None)
    weight_patches = patches.get("weight", None) if patches is not None else None
    bias_patches = patches.get("bias", None) if patches is not None else None
    weight = None
    if layer.weight is not None:
        weight = layer.weight
        if weight_fn is not None:
            weight = weight_fn(weight)
        if weight_args is not None:
            weight = weight.to(**weight_args)
        if scale_weight is not None:
            weight = weight * scale_weight.to(device=weight.device, dtype=weight.dtype)
        if weight_patches is not None:
            weight = merge_lora_to_weight(patches=weight_patches, weight=weight, key="online weight lora", computation_dtype=weight.dtype)
    bias = None
    if layer.bias is not None:
        bias = layer.bias
        if bias_fn is not None:
            bias = bias_fn(bias)
        if bias_args is not None:
            bias = bias.to(**bias_args)
        if bias_patches is not None:
            bias = merge_lora_to_weight(patches=bias_patches, weight=bias, key="online bias lora", computation_dtype=bias.dtype)
    return weight, bias


class ForgeOperations:
    class Linear(torch.nn.Linear):
        def forward(self, x):
            weight, bias = get_weight_and_bias(self)
            return torch.nn.functional.linear(x, weight, bias)

    class Conv2d(torch.nn.Conv2d):
        def forward(self, x):
            weight, bias = get_weight_and_bias(self)
            return super()._conv_forward(x, weight, bias)


def forge_layers(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with Forge's Linear / Conv2d classes (in place)."""
    for m in module.modules():
        if type(m) is torch.nn.Linear:
            m.__class__ = ForgeOperations.Linear
        elif type(m) is torch.nn.Conv2d:
            m.__class__ = ForgeOperations.Conv2d
    return module
