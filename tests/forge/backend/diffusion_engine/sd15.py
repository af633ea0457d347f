"""Mirrors backend/diffusion_engine/sd15.py ``StableDiffusion``: the CLIP patcher over
``clip_l``, a ``UnetPatcher`` over the UNet's ``KModel``, one ``ClassicTextProcessingEngine``
(clip skip 1, final LayerNorm), the three ``ForgeObjects`` sets, ``is_sd1``, and
``get_learned_conditioning`` under ``torch.inference_mode`` after loading the CLIP patcher.
No VAE: the stand-in's processing decodes latents itself."""

import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.modules.k_prediction import Prediction
from backend.patcher.clip import CLIP, IntegratedCLIP
from backend.patcher.unet import UnetPatcher
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


class StableDiffusion(ForgeDiffusionEngine):
    def __init__(self, unet, text_model, tokenizer):
        super().__init__()
        clip = CLIP(model_dict={"clip_l": IntegratedCLIP(text_model)}, tokenizer_dict={"clip_l": tokenizer})
        unet = UnetPatcher.from_model(unet, Prediction())
        self.text_processing_engine = ClassicTextProcessingEngine(clip.cond_stage_model.clip_l, clip.tokenizer.clip_l)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=None, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sd1 = True

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        return self.text_processing_engine(prompt)
