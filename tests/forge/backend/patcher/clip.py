"""Mirrors backend/patcher/clip.py ``CLIP``: the text encoders (``cond_stage_model.clip_l`` /
``clip_h`` / ``clip_g``, each an ``IntegratedCLIP`` whose ``transformer`` is a transformers
CLIPTextModel), their tokenizers and the ModelPatcher that loads them."""

import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher


class IntegratedCLIP(torch.nn.Module):
    """Mirrors backend/nn/clip.py: the wrapper Forge loads a CLIP text model into; with
    ``add_text_projection`` (SDXL's clip_g) the transformer gets a bias-free ``text_projection``."""

    def __init__(self, transformer, text_projection=None):
        super().__init__()
        self.transformer = transformer
        if text_projection is not None:
            self.transformer.text_projection = text_projection


class CLIP:
    def __init__(self, model_dict, tokenizer_dict):
        self.cond_stage_model = torch.nn.Module()
        for name, model in model_dict.items():
            setattr(self.cond_stage_model, name, model)
        self.tokenizer = type("Tokenizers", (), dict(tokenizer_dict))()
        self.patcher = ModelPatcher(self.cond_stage_model, load_device=memory_management.text_encoder_device(),
                                    offload_device=memory_management.text_encoder_offload_device())
