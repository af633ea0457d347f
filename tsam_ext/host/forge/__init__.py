"""The Forge 2.x backend (lllyasviel/stable-diffusion-webui-forge, tested at main dfdcbab6): text
targets from Forge's text engines and the steering of its samplers through its own UNet (the
names ``host.backend`` documents)."""

from modules import sd_models
from modules_forge import main_thread

from ...core.recorder import UnsupportedUNet
from .sampling import SamplingPass
from .text import TextTargets

__all__ = ["SamplingPass", "TextTargets", "unet", "unsupported", "with_model"]

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


def with_model(fn):
    """``fn`` of the checkpoint the next generation uses, on Forge's main thread as its own model
    work runs (queued behind a running generation). Forge loads a checkpoint at the first
    generation after it is chosen (``forge_model_reload``); before that ``shared.sd_model`` is a
    placeholder, so this loads it first. The main thread prints and swallows exceptions: an
    error of ``fn`` is carried back and raised here."""
    outcome = {}

    def task():
        try:
            outcome["value"] = fn(sd_models.forge_model_reload()[0])
        except Exception as e:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = e

    main_thread.run_and_wait_result(task)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
