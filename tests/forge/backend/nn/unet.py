"""Mirrors backend/nn/unet.py's ``CrossAttention``, ``BasicTransformerBlock`` and
``IntegratedUNet2DConditionModel.forward``, installed into ldm's real UNetModel (Forge's UNet
keeps ldm's layout and module names; these are what changed):

- ``forward`` (:696) takes ``control`` and ``transformer_options``: each input block's output,
  the middle block's and each skip connection get the next ControlNet residual of their kind,
  popped from the control dict and added in place (``apply_control``: a residual that does not
  fit is printed and dropped, not raised); ``block_modifiers`` run before and after every block
  with ``transformer_options["block"]``, ``input_block_patch`` / ``output_block_patch`` after
  them (attention patches, which Forge threads into the transformer blocks, are not mirrored);

- ``CrossAttention`` keeps ``heads`` and ``dim_head`` but has no ``scale``; it is called with
  keyword arguments (``context``, ``value``, ``transformer_options``) and attends with
  ``attention_function`` (PyTorch SDPA under --attention-pytorch);
- ``BasicTransformerBlock._forward`` adds each sub-layer's output to x IN PLACE (``x += n``, :240,
  :272, :278), right after the LayerNorm that read x: a backward pass through it fails unless the
  LayerNorms get a copy ("modified by an inplace operation").
"""

import torch
import torch.nn.functional as F
from ldm.modules.diffusionmodules.util import timestep_embedding


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


def apply_control(h, control, name):
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h += ctrl
            except Exception:
                print("warning control could not be applied", h.shape, ctrl.shape)
    return h


class IntegratedForward:
    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        transformer_patches = transformer_options.get("patches", {})
        block_modifiers = transformer_options.get("block_modifiers", [])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False).to(x.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for id, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", id)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "before", transformer_options)
            h = module(h, emb, context)
            h = apply_control(h, control, "input")
            for block_modifier in block_modifiers:
                h = block_modifier(h, "after", transformer_options)
            for p in transformer_patches.get("input_block_patch", []):
                h = p(h, transformer_options)
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "before", transformer_options)
        h = self.middle_block(h, emb, context)
        h = apply_control(h, control, "middle")
        for block_modifier in block_modifiers:
            h = block_modifier(h, "after", transformer_options)
        for id, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", id)
            hsp = apply_control(hs.pop(), control, "output")
            for p in transformer_patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "before", transformer_options)
            h = module(h, emb, context)
            for block_modifier in block_modifiers:
                h = block_modifier(h, "after", transformer_options)
        transformer_options["block"] = ("last", 0)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "before", transformer_options)
        h = self.out(h)
        for block_modifier in block_modifiers:
            h = block_modifier(h, "after", transformer_options)
        return h.type(x.dtype)


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
    unet.__class__ = type("IntegratedUNet2DConditionModel", (IntegratedForward, type(unet)), {})
    return unet
