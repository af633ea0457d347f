"""Mirrors sgm/modules/diffusionmodules/wrappers.py ``OpenAIWrapper``: the UNet gets
``context=c["crossattn"]`` and ``y=c["vector"]``; only ``c["concat"]`` (never A1111's
``c_concat``) is concatenated to x."""

import torch
from torch import nn


class OpenAIWrapper(nn.Module):
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c, **kwargs):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn", None), y=c.get("vector", None), **kwargs)
