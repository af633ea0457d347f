"""Mirrors backend/patcher/clip.py ``CLIP``: the text encoders (``cond_stage_model.clip_l``, an
``IntegratedCLIP`` whose ``transformer`` is a transformers CLIPTextModel), their tokenizers and
the ModelPatcher that loads them."""

import torch

from backend.patcher.base import ModelPatcher


class IntegratedCLIP(torch.nn.Module):
    """Mirrors backend/nn/clip.py: the wrapper Forge loads a CLIP text model into."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer


class CLIP:
    def __init__(self, model_dict, tokenizer_dict):
        self.cond_stage_model = torch.nn.Module()
        for name, model in model_dict.items():
            setattr(self.cond_stage_model, name, model)
        self.tokenizer = type("Tokenizers", (), dict(tokenizer_dict))()
        self.patcher = ModelPatcher(self.cond_stage_model)
