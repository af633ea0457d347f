"""Mirrors sd-webui-controlnet ``scripts/adapter.py`` ``PlugableAdapter``: the T2I-Adapter's features
depend on the hint only, are computed once (``self.control``) and handed out as deep copies. The
adapter net itself (``Adapter``: 4 features at the channels and sizes of SD 1.x's input blocks 2,
5, 8 and 11) is a small random one here."""

from copy import deepcopy

import torch.nn as nn

from modules import devices


class PlugableAdapter(nn.Module):
    def __init__(self, control_model):
        super().__init__()
        self.control_model = control_model
        self.control = None
        self.hint_cond = None

    def reset(self):
        self.control = None
        self.hint_cond = None

    def forward(self, hint=None, x=None, *args, **kwargs):
        if self.control is not None:
            return deepcopy(self.control)
        self.hint_cond = devices.cond_cast_unet(hint)
        self.control = self.control_model(devices.cond_cast_unet(hint))
        return deepcopy(self.control)


class Adapter(nn.Module):
    def __init__(self, channels=(32, 64, 64, 64), hint_channels=3):
        super().__init__()
        self.body = nn.ModuleList()
        previous = hint_channels
        for i, c in enumerate(channels):
            self.body.append(nn.Conv2d(previous, c, 3, padding=1, stride=8 if i == 0 else 2))
            previous = c

    def forward(self, hint):
        out, h = [], hint
        for conv in self.body:
            h = conv(h)
            out.append(h * 0.1)
        return out
