"""Mirrors sd-webui-controlnet ``scripts/cldm.py``: ``PlugableControlModel`` (the unit's model; its
``control_model`` is the net) and ``ControlNet``'s structure and ``forward``: time embedding (+ the
label embedding of SDXL), ``input_hint_block`` (the 8x-downsampling hint encoder, added after the
first input block), a copy of the UNet's encoder and middle block, one zero convolution per
input block and ``middle_block_out``; it returns the 13 (SDXL: 10) residuals, shallowest first.
Built here from ldm's own blocks for a UNet config (the real one builds the same blocks from its
own config); its encoder starts as a copy of the UNet's, as a trained ControlNet does, and its
zero convolutions are small random ones (a trained ControlNet's are not zero)."""

import copy

import torch
import torch.nn as nn

from ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential, UNetModel
from ldm.modules.diffusionmodules.util import conv_nd, timestep_embedding


class PlugableControlModel(nn.Module):
    def __init__(self, control_model):
        super().__init__()
        self.control_model = control_model
        self.is_control_lora = False

    def reset(self):
        pass

    def forward(self, *args, **kwargs):
        return self.control_model(*args, **kwargs)


class ControlNet(nn.Module):
    def __init__(self, unet: UNetModel, hint_channels=3, zero_std=0.03, seed=7):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.model_channels, self.dtype = unet.model_channels, torch.float32
        self.num_classes = unet.num_classes
        self.time_embed = copy.deepcopy(unet.time_embed)
        if unet.num_classes is not None:
            self.label_emb = copy.deepcopy(unet.label_emb)
        mc = unet.model_channels
        self.input_hint_block = TimestepEmbedSequential(
            conv_nd(2, hint_channels, 16, 3, padding=1), nn.SiLU(), conv_nd(2, 16, 32, 3, padding=1, stride=2), nn.SiLU(),
            conv_nd(2, 32, 32, 3, padding=1, stride=2), nn.SiLU(), conv_nd(2, 32, 32, 3, padding=1, stride=2), nn.SiLU(),
            conv_nd(2, 32, mc, 3, padding=1))
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        chans = [block[0].out_channels for block in self.input_blocks]  # ResBlock, Downsample or the first conv
        self.zero_convs = nn.ModuleList([TimestepEmbedSequential(conv_nd(2, c, c, 1)) for c in chans])
        self.middle_block_out = TimestepEmbedSequential(conv_nd(2, chans[-1], chans[-1], 1))
        with torch.no_grad():
            for conv in [*self.zero_convs, self.middle_block_out, self.input_hint_block[-1:]]:
                for p in conv.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * zero_std)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs):
        original_type = x.dtype
        x, hint, timesteps, context = x.to(self.dtype), hint.to(self.dtype), timesteps.to(self.dtype), context.to(self.dtype)
        if y is not None:
            y = y.to(self.dtype)
        t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(self.dtype)
        emb = self.time_embed(t_emb)
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
        return [o.to(original_type) for o in outs]
