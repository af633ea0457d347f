"""The families the runtime builds, by the name ``--arch`` takes: random weights at the real
size by default (``model_channels`` / ``text_head_dim`` shrink them for a CPU), or a checkpoint.

| arch  | UNet (attn2 at latent/4)       | text encoders                  | prediction |
|-------|--------------------------------|--------------------------------|------------|
| sd1   | ldm, 16 attn2 (5)              | CLIP ViT-L                     | eps        |
| sd2   | ldm, SD 2 config, 16 attn2 (5) | OpenCLIP ViT-H (penultimate)   | eps        |
| sd2-v | as sd2                         | as sd2                         | v          |
| sdxl  | SDXL layout, 70 attn2 (60)     | CLIP ViT-L + OpenCLIP ViT-bigG | eps        |
"""

from torch import nn

from . import sd1, sd2, sdxl
from .model import Diffusion

ARCHES = ("sd1", "sd2", "sd2-v", "sdxl")
DEFAULT_SIZE = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}  # px each family was trained at


def build(arch: str, model_channels: int = 320, decoder: bool = True, seed: int = 0, peaky: bool = True,
          text_head_dim: int | None = None) -> Diffusion:
    """A family's modules with deterministic random weights (peaky attention unless ``peaky=False``)."""
    common = dict(model_channels=model_channels, decoder=decoder, seed=seed, peaky=peaky, text_head_dim=text_head_dim)
    if arch == "sd1":
        return sd1.build(**common)
    if arch in ("sd2", "sd2-v"):
        return sd2.build(v_prediction=arch == "sd2-v", **common)
    if arch == "sdxl":
        return sdxl.build(**common)
    raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHES)}")


def unet(arch: str, model_channels: int = 320) -> nn.Module:
    """A family's UNet alone, at its real text width, with the module's own initial weights."""
    if arch == "sd1":
        return sd1.sd1_unet(model_channels)
    if arch in ("sd2", "sd2-v"):
        return sd2.sd2_unet(model_channels)
    if arch == "sdxl":
        return sdxl.sdxl_unet(model_channels)
    raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHES)}")


def load_checkpoint(arch: str, path: str, model_channels: int = 320, text_head_dim: int | None = None) -> Diffusion:
    """A checkpoint of that family in A1111's key layout, on the real-size architecture (or the
    one ``model_channels`` / ``text_head_dim`` describe)."""
    size = dict(model_channels=model_channels, text_head_dim=text_head_dim)
    if arch == "sd1":
        return sd1.load_checkpoint(path, **size)
    if arch in ("sd2", "sd2-v"):
        return sd2.load_checkpoint(path, v_prediction=arch == "sd2-v", **size)
    if arch == "sdxl":
        return sdxl.load_checkpoint(path, **size)
    raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHES)}")
