"""Recording the UNet's cross-attention probabilities at the latent/4 grid, for guidance only.

Layers are chosen by resolution, not by index: each ``attn2`` of a UNet built like ldm's or
sgm's ``UNetModel`` (``input_blocks`` / ``middle_block`` / ``output_blocks``) gets the number of
2x downsamplings above it, and the layers at level 2 are the latent/4 ones (SD1.x at 512 px:
input_blocks 7, 8 and output_blocks 3, 4, 5; SDXL: every level-2 transformer block).

Recording is a scope (``Recorder.record``): forward pre-hooks recompute each selected layer's
probabilities softmax(q k^T * scale) in float32 from its own ``to_q`` / ``to_k``, whatever
attention kernel the host installed, so the layer's output is untouched. A host whose kernels
transform the text before ``to_k`` / ``to_v`` (A1111's hypernetworks) hands the recorder that
transform (``contexts``), so the maps are the layer's own; a host may also name the layers whose
kernel (its own) torch's fused attention may replace during a guidance pass (``fusable``,
``Recorder.fused``, ``fused_attention``): the same function, a cheaper backward. Outside the
scope no hook exists. With ``truncate=True`` the pass stops as soon as the last selected layer
has its probabilities: nothing after it can change the loss, so nothing after it is computed.

Under autograd a layer call whose input does not depend on anything that requires a gradient
is not the guidance pass's own: another extension runs the UNet inside the pass for its own
purpose (ControlNet's and Forge's reference-only run it on the reference image first), or runs
part of it without gradients. Such calls are not recorded; a pass that leaves a selected layer
unrecorded fails with ``MapsNotRecorded``, naming the layers, rather than guiding with maps that
are not the latent's.
"""

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from .fused_attention import Contexts, fused, is_attention, same_contexts

LEVEL = 2  # latent/4: two 2x downsamplings


class UnsupportedUNet(RuntimeError):
    """The UNet does not have the ldm/sgm block structure the layer selection reads."""


class MapsNotRecorded(RuntimeError):
    """A guidance pass ended without the maps of every selected layer, computed from the latent."""


class PassComplete(BaseException):
    """Raised by the last selected layer's hook to end a truncated pass.

    A BaseException so that host or extension code catching ``Exception`` between the UNet
    call and the guidance step (wrappers, error reporters) lets it through untouched.
    """


def _count(module: torch.nn.Module, class_name: str) -> int:
    return sum(type(m).__name__ == class_name for m in module.modules())


def _cross_attentions(block: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for name, m in block.named_modules() if name.split(".")[-1] == "attn2"]


def attention_levels(unet: torch.nn.Module) -> list[tuple[torch.nn.Module, int]]:
    """Every cross-attention layer of the UNet with its level (2x downsamplings above it), in call order."""
    if not all(hasattr(unet, a) for a in ("input_blocks", "middle_block", "output_blocks")):
        raise UnsupportedUNet(f"{type(unet).__name__} has no input_blocks/middle_block/output_blocks")
    found, level = [], 0
    for block in unet.input_blocks:
        found += [(m, level) for m in _cross_attentions(block)]
        level += _count(block, "Downsample")
    found += [(m, level) for m in _cross_attentions(unet.middle_block)]
    for block in unet.output_blocks:
        found += [(m, level) for m in _cross_attentions(block)]
        level -= _count(block, "Upsample")
    return found


def level_grid(latent_hw: tuple[int, int], level: int = LEVEL) -> tuple[int, int]:
    """Query grid (h, w) at a level: each stride-2 downsampling maps a side s to ceil(s / 2)."""
    h, w = latent_hw
    for _ in range(level):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def _keep(t: torch.Tensor) -> torch.Tensor:
    return t


def keep_saved():
    """Saved-tensor hooks that keep the tensors autograd saves as they are: the recorder's
    computation inside a checkpointed block (``checkpointing``) is then neither dropped nor
    expected again when the block is recomputed in the backward, where no hook runs."""
    return torch.autograd.graph.saved_tensors_hooks(_keep, _keep)


def head_probs(module: torch.nn.Module, x: torch.Tensor, context_k: torch.Tensor) -> torch.Tensor:
    """Per-head probabilities [N, heads, n_q, S] in float32 of one ldm/sgm ``CrossAttention``.

    ``x`` [N, n_q, C] is the layer's (normalised) input, ``context_k`` [N, S, D] the text as its
    ``to_k`` reads it. The product runs with autocast off so fp16 models still get float32
    logits. A layer without ``scale`` (Forge's) has the standard dim_head ** -0.5.
    """
    q, k = module.to_q(x), module.to_k(context_k)
    n, heads = q.shape[0], module.heads
    scale = getattr(module, "scale", None) or (q.shape[-1] // heads) ** -0.5
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = q.float().reshape(n, q.shape[1], heads, -1).transpose(1, 2)
        k = k.float().reshape(n, k.shape[1], heads, -1).transpose(1, 2)
        return (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)


def attention_probs(module: torch.nn.Module, x: torch.Tensor, context_k: torch.Tensor) -> torch.Tensor:
    """Head-averaged probabilities [N, n_q, S] in float32 (``head_probs`` averaged over heads)."""
    return head_probs(module, x, context_k).mean(dim=1)


@dataclass
class Recording:
    """Maps of one pass: ``maps`` [N, gh, gw, S] (mean over the selected layers and heads);
    ``without_grad``: id -> name of selected layers that ran on an input without a gradient."""
    grid: tuple[int, int]
    expected: int
    layers: int = 0
    total: torch.Tensor | None = None
    seen: set = field(default_factory=set)
    without_grad: dict[int, str] = field(default_factory=dict)

    @property
    def maps(self) -> torch.Tensor:
        if self.layers != self.expected:
            missed = [name for key, name in self.without_grad.items() if key not in self.seen]
            detail = f"; {', '.join(missed)} ran without a gradient to the latent" if missed else ""
            raise MapsNotRecorded(f"recorded {self.layers} of {self.expected} cross-attention layers{detail}")
        return (self.total / self.layers).reshape(self.total.shape[0], *self.grid, self.total.shape[-1])


class Recorder:
    """The latent/4 cross-attention layers of one UNet, and a scope that records them."""

    def __init__(self, unet: torch.nn.Module, level: int = LEVEL, contexts: Contexts = same_contexts,
                 fusable: Callable[[torch.nn.Module], bool] | None = None):
        """``contexts(layer, context)`` is the text (k, v) the layer reads (the host's transform);
        ``fusable(layer)`` says whether the layer's kernel is the host's own, replaceable in a pass."""
        self.unet = unet
        self.level = level
        self.contexts = contexts
        self.fusable = fusable
        self.layers = [m for m, lv in attention_levels(unet) if lv == level]
        self.names = {id(m): name for name, m in unet.named_modules() if any(m is l for l in self.layers)}
        if not self.layers:
            raise UnsupportedUNet(f"no cross-attention layer at level {level} (latent/{2 ** level})")

    @contextmanager
    def record(self, latent_hw: tuple[int, int], truncate: bool = True):
        """Scope of one guidance pass over a latent of spatial size ``latent_hw``; yields a Recording."""
        rec = Recording(level_grid(latent_hw, self.level), len(self.layers))
        n_q = rec.grid[0] * rec.grid[1]

        def hook(module, args, kwargs):
            context = kwargs.get("context", args[1] if len(args) > 1 else None)
            if context is None or id(module) in rec.seen:
                return None
            x = args[0]
            if torch.is_grad_enabled() and not x.requires_grad:
                rec.without_grad[id(module)] = self.names[id(module)]
                return None
            if x.shape[1] != n_q:
                raise RuntimeError(f"cross-attention layer has {x.shape[1]} queries, expected {n_q} ({rec.grid})")
            with keep_saved():
                probs = attention_probs(module, x, self.key_context(module, context))
            rec.total = probs if rec.total is None else rec.total + probs
            rec.layers += 1
            rec.seen.add(id(module))
            if truncate and rec.layers == rec.expected:
                raise PassComplete
            return None

        handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in self.layers]
        try:
            yield rec
        finally:
            for h in handles:
                h.remove()

    def fused(self):
        """Scope (a guidance pass's forward and backward: a checkpoint recomputes in the backward)
        in which the host's fusable layers run torch's fused attention."""
        layers = [m for m in self.unet.modules() if is_attention(m) and self.fusable(m)] if self.fusable else []
        return fused(layers, self.contexts) if layers else nullcontext()

    def key_context(self, layer: torch.nn.Module, context: torch.Tensor) -> torch.Tensor:
        """The text the layer's ``to_k`` reads."""
        return self.contexts(layer, context)[0]

    def run(self, forward, latent_hw: tuple[int, int], truncate: bool = True) -> torch.Tensor:
        """Run ``forward()`` (one UNet pass) inside a recording scope; returns the maps [N, gh, gw, S]."""
        with self.record(latent_hw, truncate) as rec:
            try:
                forward()
            except PassComplete:
                pass
        return rec.maps
