"""A backward pass through Forge's UNet, which Forge builds and runs for inference only.

Forge loads every weight under ``torch.inference_mode`` (``backend/loader.py``, its
``ForgeOperations`` create the Parameters there; LoRA merges make new ones the same way) and
samples inside ``torch.inference_mode``. Autograd refuses to save an inference tensor for the
backward pass; Forge's ``BasicTransformerBlock`` adds in place (``x += n``) to the tensor its
LayerNorms just saved; and its UNet adds each ControlNet residual in place (``apply_control``:
``h += ctrl``) to a skip connection, which the next block has saved. With LoRA in online mode
(the "fp16 LoRA" choices for fp8 / nf4 weights) each layer call merges its LoRA into a new weight
in ``merge_lora_to_weight``, an ``@torch.inference_mode()`` function (backend/patcher/lora.py),
so every merged weight is an inference tensor again. ``trainable`` is the scope of one guidance
pass that lifts all four, and leaves nothing behind: every Parameter object Forge holds is back in place when it ends, so
Forge's own sampling, its memory manager and its LoRA patcher never see a change.
"""

import inspect
from contextlib import ExitStack, contextmanager

import torch


def alias(t: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) tensor on the same storage as ``t``: no copy, no extra memory;
    an in-place change of either shows in both."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


@contextmanager
def normal_weights(module: torch.nn.Module):
    """Inside: each inference Parameter / buffer of ``module`` is replaced by a non-trainable alias
    of it; outside: the original objects, whatever Forge did to them before (LoRA, reloads).
    Parameters of a subclass (quantized GGUF / bnb weights, dequantized per layer by Forge in
    ordinary tensors) are left alone."""
    swapped = []
    try:  # all or nothing: a failure part-way puts back what was swapped so far
        with torch.inference_mode(False):
            for m in module.modules():
                for store in (m._parameters, m._buffers):
                    for name, t in list(store.items()):
                        if t is None or not t.is_inference() or type(t) not in (torch.nn.Parameter, torch.Tensor):
                            continue
                        replacement = torch.nn.Parameter(alias(t), requires_grad=False) if store is m._parameters else alias(t)
                        store[name] = replacement
                        swapped.append((store, name, t))
        yield len(swapped)
    finally:
        for store, name, t in swapped:
            store[name] = t


@contextmanager
def cloned_layernorm_inputs(module: torch.nn.Module):
    """Each LayerNorm of a transformer block normalises a copy of its input, so the block's
    in-place residual add cannot change a tensor autograd saved."""
    norms = [m for name, m in module.named_modules() if isinstance(m, torch.nn.LayerNorm) and ".transformer_blocks." in name]
    handles = [m.register_forward_pre_hook(lambda _m, args: (args[0].clone(),) + tuple(args[1:])) for m in norms]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def residuals_on_copies():
    """Inside: Forge's ``apply_control`` (backend/nn/unet.py) adds a residual to a copy of the
    block output it is given, so the tensor an earlier block saved stays as autograd saved it."""
    from backend.nn import unet as forge_unet

    real = forge_unet.apply_control

    def apply_control(h, control, name):
        if control is not None and control.get(name):
            h = h.clone()
        return real(h, control, name)

    forge_unet.apply_control = apply_control
    try:
        yield
    finally:
        forge_unet.apply_control = real


@contextmanager
def lora_merged_for_autograd():
    """Inside: the layers' online LoRA merge (backend/operations.py calls ``merge_lora_to_weight``
    by the name it imported) runs its undecorated body, in the pass's normal mode: the same
    merged weight, as a tensor autograd can save."""
    from backend import operations

    real = operations.merge_lora_to_weight
    operations.merge_lora_to_weight = inspect.unwrap(real)
    try:
        yield
    finally:
        operations.merge_lora_to_weight = real


@contextmanager
def trainable(*modules: torch.nn.Module):
    """The scope of one guidance pass through ``modules`` (the UNet, the ControlNets): inference
    mode off, weights aliased, LayerNorm inputs cloned, ControlNet residuals added to copies, online
    LoRA merged outside inference mode. Tensors made inside are normal tensors;
    an inference tensor from outside (the sampler's latent) must be cloned before it is changed
    in place in here."""
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(residuals_on_copies())
        stack.enter_context(lora_merged_for_autograd())
        for module in modules:
            stack.enter_context(normal_weights(module))
            stack.enter_context(cloned_layernorm_inputs(module))
        yield
