"""The AUTOMATIC1111 WebUI 1.10 backend: text targets from its text encoders and the steering of
its samplers (the names ``host.backend`` documents)."""

from modules import sd_unet, shared

from .sampling import SamplingPass
from .text import TextTargets, encoders

__all__ = ["SamplingPass", "TextTargets", "encoders", "transformer_kind", "unet", "unsupported", "with_model"]


def transformer_kind(sd_model) -> str | None:
    """"SD3" or "Flux" for those diffusion transformers (A1111 1.10 loads SD3), else None."""
    return next((kind for flag, kind in (("is_sd3", "SD3"), ("is_flux", "Flux")) if getattr(sd_model, flag, False)), None)


def unet(sd_model):
    """ldm's / sgm's UNetModel inside the checkpoint's LatentDiffusion, or None."""
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def unsupported(p) -> str | None:
    """What stops T-SAM in this WebUI whatever the checkpoint, or None."""
    if getattr(shared.cmd_opts, "lowvram", False):
        return "--lowvram streams the UNet block by block, so no gradient can flow through it (--medvram works)"
    option = sd_unet.get_unet_option()  # what processing makes current after the scripts' process
    if option is not None:
        return f"the alternative UNet {option.label} (Settings: SD Unet) has no attention layers T-SAM can read"
    return None


def with_model(fn):
    """``fn`` of the loaded checkpoint (A1111 loads it at start and on every switch)."""
    return fn(shared.sd_model)
