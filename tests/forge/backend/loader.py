"""Mirrors backend/loader.py ``forge_loader`` (:497) for an SD 1.x checkpoint, run under
``torch.inference_mode`` as there: every module is built anew and every weight becomes a new
``nn.Parameter`` made in inference mode (what ``ForgeOperations.*._load_from_state_dict`` do,
backend/operations.py:137-144), so each weight is an inference tensor. The checkpoint is a
``tsam_ext.runtime.sd1.SD1`` (the real architectures); the UNet gets Forge's attention and
transformer blocks (backend/nn/unet.py)."""

import copy

import torch

from backend.diffusion_engine.sd15 import StableDiffusion
from backend.nn.unet import integrate


def _inference_weights(module: torch.nn.Module) -> None:
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(p.detach().clone())
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = b.detach().clone()


@torch.inference_mode()
def forge_loader(checkpoint):
    sd = copy.deepcopy(checkpoint)
    for part in (sd.unet, sd.text_model):
        _inference_weights(part)
    return StableDiffusion(integrate(sd.unet), sd.text_model, sd.tokenizer)
