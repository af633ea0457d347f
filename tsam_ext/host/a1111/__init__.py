"""The AUTOMATIC1111 WebUI 1.10 backend: text targets from its text encoders and the steering of
its samplers (the names ``host.backend`` documents)."""

from modules import sd_unet, shared

from .sampling import SamplingPass
from .text import TextTargets

__all__ = ["SamplingPass", "TextTargets", "unet", "unsupported", "with_model"]


def unet(sd_model):
    """ldm's / sgm's UNetModel inside the checkpoint's LatentDiffusion."""
    return sd_model.model.diffusion_model


def unsupported(p) -> str | None:
    """What stops T-SAM in this WebUI whatever the checkpoint, or None."""
    if getattr(shared.cmd_opts, "lowvram", False):
        return "--lowvram streams the UNet block by block, so no gradient can flow through it (--medvram works)"
    if getattr(sd_unet, "current_unet", None) is not None:
        return f"the alternative UNet {sd_unet.current_unet.__class__.__name__} has no attention layers T-SAM can read"
    return None


def with_model(fn):
    """``fn`` of the loaded checkpoint (A1111 loads it at start and on every switch)."""
    return fn(shared.sd_model)
