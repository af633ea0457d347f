"""Which WebUI is running, and so which backend T-SAM uses: the one place that tells them apart.

Forge 2.x (lllyasviel/stable-diffusion-webui-forge) keeps A1111's ``modules`` but ships its own
packages ``modules_forge`` and ``backend`` (``backend.diffusion_engine`` holds its model classes);
AUTOMATIC1111's WebUI has neither. Each backend package (``a1111``, ``forge``) exposes the same
names, and neither imports the other:

- ``TextTargets(sd_model, gamma, order, text_encoder, warn)``: T of the texts of a generation, per
  chunk (``host.text_targets``);
- ``encoders(sd_model)``: the model's text encoders, or ``UnsupportedText``;
- ``SamplingPass(job, p, hires)``: the wrappers that steer one sampling pass (``host.sampling_pass``);
- ``transformer_kind(sd_model)``: the name of a diffusion transformer (SD3, Flux, Chroma), else None;
- ``unet(sd_model)``: the denoising UNet, or None;
- ``unsupported(p)``: why this host cannot guide the generation at all (memory modes, replaced UNets), or None;
- ``with_model(fn)``: ``fn(sd_model)`` for work the UI asks for outside a generation (the T preview),
  with the checkpoint a generation would use, where the host runs model work.
"""

import importlib
import importlib.util


def running_forge() -> bool:
    """Forge's own packages are importable (never the case in A1111)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("modules_forge", "backend.diffusion_engine"))
    except ModuleNotFoundError:  # looking up backend.diffusion_engine imports "backend", which may not exist
        return False


NAME = "forge" if running_forge() else "a1111"
current = importlib.import_module(f"{__package__}.{NAME}")
