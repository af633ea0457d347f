"""Mirrors backend/diffusion_engine/sdxl.py ``StableDiffusionXL``: the CLIP patcher over ``clip_l``
and ``clip_g`` (OpenCLIP ViT-bigG as a transformers CLIPTextModel with ``text_projection``), two
``ClassicTextProcessingEngine``s (``_l``: clip skip 2, no final LayerNorm; ``_g``: clip skip 2, no
final LayerNorm, pooled output through the projection), ``is_sdxl``, and
``get_learned_conditioning`` (:86-119): ``crossattn`` = cat(l, g) on the channel axis,
``vector`` = cat(pooled g, the 256-wide embeddings of height, width, crop top, crop left, target
height, target width); an all-empty negative prompt is zeros."""

import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.modules.k_prediction import Prediction
from backend.patcher.clip import CLIP, IntegratedCLIP
from backend.patcher.unet import UnetPatcher
from backend.text_processing.classic_engine import ClassicTextProcessingEngine
from tsam_ext.runtime.sdxl import size_embedding  # sgm's Timestep(256) embedding, as Forge's backend.nn.unet.Timestep


class StableDiffusionXL(ForgeDiffusionEngine):
    def __init__(self, unet, clip_l, clip_g, projection, tokenizer_l, tokenizer_g):
        super().__init__()
        clip = CLIP(model_dict={"clip_l": IntegratedCLIP(clip_l), "clip_g": IntegratedCLIP(clip_g, projection)},
                    tokenizer_dict={"clip_l": tokenizer_l, "clip_g": tokenizer_g})
        unet = UnetPatcher.from_model(unet, Prediction())
        self.text_processing_engine_l = ClassicTextProcessingEngine(
            clip.cond_stage_model.clip_l, clip.tokenizer.clip_l, embedding_key="clip_l", minimal_clip_skip=2, clip_skip=2,
            final_layer_norm=False)
        self.text_processing_engine_g = ClassicTextProcessingEngine(
            clip.cond_stage_model.clip_g, clip.tokenizer.clip_g, embedding_key="clip_g", minimal_clip_skip=2, clip_skip=2,
            final_layer_norm=False, text_projection=True, return_pooled=True)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=None, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sdxl = True

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_l = self.text_processing_engine_l(prompt)
        cond_g, clip_pooled = self.text_processing_engine_g(prompt)
        width = getattr(prompt, "width", 1024) or 1024
        height = getattr(prompt, "height", 1024) or 1024
        sizes = size_embedding((height, width, 0, 0, height, width), clip_pooled.device, clip_pooled.dtype)
        flat = sizes[None].repeat(clip_pooled.shape[0], 1)
        if getattr(prompt, "is_negative_prompt", False) and all(x == "" for x in prompt):
            clip_pooled, cond_l, cond_g = torch.zeros_like(clip_pooled), torch.zeros_like(cond_l), torch.zeros_like(cond_g)
        return dict(crossattn=torch.cat([cond_l, cond_g], dim=2), vector=torch.cat([clip_pooled, flat], dim=1))
