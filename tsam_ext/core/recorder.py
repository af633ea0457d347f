"""Recording the UNet's cross-attention probabilities at the latent/4 grid, for guidance only.

Layers are chosen by resolution, not by index: each ``attn2`` of a UNet built like ldm's or
sgm's ``UNetModel`` (``input_blocks`` / ``middle_block`` / ``output_blocks``) gets the number of
2x downsamplings above it, and the layers at level 2 are the latent/4 ones (SD1.x at 512 px:
input_blocks 7, 8 and output_blocks 3, 4, 5; SDXL: every level-2 transformer block).

Recording is a scope (``Recorder.record``): forward pre-hooks recompute each selected layer's
probabilities softmax(q k^T * scale) in float32 from its own ``to_q`` / ``to_k``, whatever
attention kernel the host installed, so the layer's output is untouched. Outside the scope no
hook exists. With ``truncate=True`` the pass stops as soon as the last selected layer has its
probabilities: nothing after it can change the loss, so nothing after it is computed.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

LEVEL = 2  # latent/4: two 2x downsamplings


class UnsupportedUNet(RuntimeError):
    """The UNet does not have the ldm/sgm block structure the layer selection reads."""


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


def attention_probs(module: torch.nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Head-averaged probabilities [N, n_q, S] in float32 of one ldm/sgm ``CrossAttention``.

    ``x`` [N, n_q, C] is the layer's (normalised) input, ``context`` [N, S, D] the text.
    The product runs with autocast off so fp16 models still get float32 logits.
    """
    q, k = module.to_q(x), module.to_k(context)
    n, heads = q.shape[0], module.heads
    scale = getattr(module, "scale", None) or (q.shape[-1] // heads) ** -0.5
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = q.float().reshape(n, q.shape[1], heads, -1).transpose(1, 2)
        k = k.float().reshape(n, k.shape[1], heads, -1).transpose(1, 2)
        probs = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
        return probs.mean(dim=1)


@dataclass
class Recording:
    """Maps of one pass: ``maps`` [N, gh, gw, S] (mean over the selected layers and heads)."""
    grid: tuple[int, int]
    expected: int
    layers: int = 0
    total: torch.Tensor | None = None
    seen: set = field(default_factory=set)

    @property
    def maps(self) -> torch.Tensor:
        if self.layers != self.expected:
            raise RuntimeError(f"recorded {self.layers} of {self.expected} cross-attention layers")
        return (self.total / self.layers).reshape(self.total.shape[0], *self.grid, self.total.shape[-1])


class Recorder:
    """The latent/4 cross-attention layers of one UNet, and a scope that records them."""

    def __init__(self, unet: torch.nn.Module, level: int = LEVEL):
        self.unet = unet
        self.level = level
        self.layers = [m for m, lv in attention_levels(unet) if lv == level]
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
            if x.shape[1] != n_q:
                raise RuntimeError(f"cross-attention layer has {x.shape[1]} queries, expected {n_q} ({rec.grid})")
            probs = attention_probs(module, x, context)
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

    def run(self, forward, latent_hw: tuple[int, int], truncate: bool = True) -> torch.Tensor:
        """Run ``forward()`` (one UNet pass) inside a recording scope; returns the maps [N, gh, gw, S]."""
        with self.record(latent_hw, truncate) as rec:
            try:
                forward()
            except PassComplete:
                pass
        return rec.maps
