"""Mirrors backend/nn/unet.py's ``CrossAttention`` and ``BasicTransformerBlock``, installed into ldm's
real UNetModel (Forge's ``IntegratedUNet2DConditionModel`` keeps ldm's layout and module names;
these two classes are what changed):

- ``CrossAttention`` keeps ``heads`` and ``dim_head`` but has no ``scale``; it is called with
  keyword arguments (``context``, ``value``, ``transformer_options``) and attends with
  ``attention_function`` (PyTorch SDPA under --attention-pytorch);
- ``BasicTransformerBlock._forward`` adds each sub-layer's output to x IN PLACE (``x += n``, :240,
  :272, :278), right after the LayerNorm that read x: a backward pass through it fails unless the
  LayerNorms get a copy ("modified by an inplace operation").
"""

import torch
import torch.nn.functional as F


class CrossAttention(torch.nn.Module):
    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context if value is None else value)
        b, h = q.shape[0], self.heads
        q, k, v = (t.reshape(b, -1, h, self.dim_head).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, h * self.dim_head)
        return self.to_out(out)


class BasicTransformerBlock(torch.nn.Module):
    def forward(self, x, context=None, transformer_options={}):
        n = self.norm1(x)
        n = self.attn1(n, context=None, value=None, transformer_options=transformer_options)
        x += n
        n = self.norm2(x)
        n = self.attn2(n, context=context, value=None, transformer_options=transformer_options)
        x += n
        x_skip = x
        x = self.ff(self.norm3(x))
        x += x_skip
        return x


def integrate(unet: torch.nn.Module) -> torch.nn.Module:
    """Give ldm's UNetModel Forge's attention and transformer-block behaviour (in place)."""
    for m in unet.modules():
        name = type(m).__name__
        if name == "CrossAttention":
            m.dim_head = m.to_q.out_features // m.heads
            del m.scale
            m.__class__ = CrossAttention
        elif name == "BasicTransformerBlock":
            m.__class__ = BasicTransformerBlock
    return unet
