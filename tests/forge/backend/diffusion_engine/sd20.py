"""Mirrors backend/diffusion_engine/sd20.py ``StableDiffusion2``: the CLIP patcher over ``clip_h``
(OpenCLIP ViT-H loaded as a transformers CLIPTextModel), one ``ClassicTextProcessingEngine``
(embedding key clip_h, clip skip 1, final LayerNorm), ``is_sd2``, and ``get_learned_conditioning``
under ``torch.inference_mode`` after loading the CLIP patcher. Text only: no predictor for v-models."""

import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.modules.k_prediction import Prediction
from backend.patcher.clip import CLIP, IntegratedCLIP
from backend.patcher.unet import UnetPatcher
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


class StableDiffusion2(ForgeDiffusionEngine):
    def __init__(self, unet, text_model, tokenizer):
        super().__init__()
        clip = CLIP(model_dict={"clip_h": IntegratedCLIP(text_model)}, tokenizer_dict={"clip_h": tokenizer})
        unet = UnetPatcher.from_model(unet, Prediction())
        self.text_processing_engine = ClassicTextProcessingEngine(clip.cond_stage_model.clip_h, clip.tokenizer.clip_h,
                                                                  embedding_key="clip_h")
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=None, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sd2 = True

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        return self.text_processing_engine(prompt)
