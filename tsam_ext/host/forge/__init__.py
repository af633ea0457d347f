"""The Forge 2.x backend (lllyasviel/stable-diffusion-webui-forge, tested at main dfdcbab6): text
targets from Forge's text engines and the steering of its samplers through its own UNet, for
SD 1.x, SD 2.x and SDXL (the names ``host.backend`` documents)."""

from modules import sd_models
from modules_forge import main_thread

from .sampling import SamplingPass
from .text import TextTargets, encoders

__all__ = ["SamplingPass", "TextTargets", "encoders", "transformer_kind", "unet", "unsupported", "with_model"]

UNET_FAMILIES = ("is_sd1", "is_sd2", "is_sdxl")  # Forge's flags of the engines with a UNet (base.py)


def transformer_kind(sd_model) -> str | None:
    """The name of a checkpoint without a UNet: SD3 (``is_sd3``), or the engine class (Flux,
    Chroma: Forge sets no flag for them), else None."""
    if any(getattr(sd_model, flag, False) for flag in UNET_FAMILIES):
        return None
    return "SD3" if getattr(sd_model, "is_sd3", False) else type(sd_model).__name__


def unet(sd_model):
    """The UNet Forge samples with (``forge_objects.unet``'s model), or None."""
    return getattr(getattr(getattr(getattr(sd_model, "forge_objects", None), "unet", None), "model", None),
                   "diffusion_model", None)


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
