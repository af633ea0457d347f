"""Mirrors backend/nn/cnets/cldm.py ``ControlNet``: a copy of the UNet's encoder (time
embedding, label embedding, input blocks, middle block) with a hint encoder added after the
first input block and a zero convolution after each input block and the middle block;
``forward(x, hint, timesteps, context, y)`` returns those residuals, encoder order. Built here
from ldm's real blocks of the UNet it controls (as a ControlNet starts, from the UNet's
encoder); the zero convolutions are random (``scale``), not zero, so the residuals matter."""

import copy

import torch
from ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential
from ldm.modules.diffusionmodules.util import timestep_embedding


def _zero_conv(channels: int, scale: float) -> TimestepEmbedSequential:
    conv = torch.nn.Conv2d(channels, channels, 1)
    torch.nn.init.normal_(conv.weight, std=scale)
    torch.nn.init.zeros_(conv.bias)
    return TimestepEmbedSequential(conv)


class ControlNet(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module, hint_channels: int = 3, scale: float = 0.05):
        super().__init__()
        self.model_channels, self.num_classes = unet.model_channels, unet.num_classes
        self.dtype = torch.float32
        self.time_embed = copy.deepcopy(unet.time_embed)
        if self.num_classes is not None:
            self.label_emb = copy.deepcopy(unet.label_emb)
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        mc = self.model_channels
        self.input_hint_block = TimestepEmbedSequential(
            torch.nn.Conv2d(hint_channels, 16, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.SiLU(),
            torch.nn.Conv2d(32, 32, 3, padding=1, stride=2), torch.nn.SiLU(),
            torch.nn.Conv2d(32, mc, 3, padding=1, stride=2))
        channels = [next(m for m in reversed(list(block.modules())) if isinstance(m, torch.nn.Conv2d)).out_channels
                    for block in self.input_blocks]
        self.zero_convs = torch.nn.ModuleList(_zero_conv(c, scale) for c in channels)
        self.middle_block_out = _zero_conv(channels[-1], scale)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype))
        guided_hint = self.input_hint_block(hint, emb, context)
        outs = []
        if self.num_classes is not None:
            assert y.shape[0] == x.shape[0]
            emb = emb + self.label_emb(y)
        h = x
        for module, zero_conv in zip(self.input_blocks, self.zero_convs):
            if guided_hint is not None:
                h = module(h, emb, context)
                h += guided_hint
                guided_hint = None
            else:
                h = module(h, emb, context)
            outs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h, emb, context))
        return outs
