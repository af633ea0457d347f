"""The Forge 2.x backend (lllyasviel/stable-diffusion-webui-forge, tested at main dfdcbab6): text
targets from Forge's text engines and the steering of its samplers through its own UNet (the
names ``host.backend`` documents)."""

from ...core.recorder import UnsupportedUNet
from .sampling import SamplingPass
from .text import TextTargets

__all__ = ["SamplingPass", "TextTargets", "unet", "unsupported"]

SUPPORTED = ("is_sd1",)  # SD 2.x and SDXL follow when their text targets are read from Forge's engines


def unet(sd_model):
    """The UNet Forge samples with (``forge_objects.unet``'s model); SD3, Flux and Chroma have none."""
    if not any(getattr(sd_model, flag, False) for flag in SUPPORTED):
        if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_sd2", False):
            kind = "SDXL" if sd_model.is_sdxl else "SD 2.x"
            raise UnsupportedUNet(f"{kind} is not supported in Forge yet (T-SAM guides SD 1.x checkpoints here)")
        kind = "SD3" if getattr(sd_model, "is_sd3", False) else type(sd_model).__name__
        raise UnsupportedUNet(f"{kind} has no UNet cross-attention for T-SAM to guide (its transformer attends to "
                              "text and image jointly); T-SAM guides SD 1.x checkpoints")
    return sd_model.forge_objects.unet.model.diffusion_model


def unsupported(p) -> str | None:
    """Nothing stops T-SAM in Forge whatever the checkpoint: Forge has no block-streaming mode
    like A1111's --lowvram; its low-memory modes compute with per-layer copies of the weights,
    which autograd takes like any tensor."""
    return None
