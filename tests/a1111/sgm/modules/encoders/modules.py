"""Mirrors sgm/modules/encoders/modules.py: ``GeneralConditioner`` (each embedder's outputs
concatenated by rank: 3 -> ``crossattn`` on the channel axis, 2 -> ``vector``; embedders whose
input key is in ``force_zero_embeddings`` give zeros), ``FrozenCLIPEmbedder`` (transformers'
CLIP; ``layer="hidden"`` -> ``hidden_states[layer_idx]``), ``FrozenOpenCLIPEmbedder2`` (every
block runs; ``penultimate`` is the last block's input, ``pooled`` the ``ln_final`` output at the
first end token times ``text_projection``; ``legacy=False`` returns the dict),
``ConcatTimestepEmbedderND``. Constructors take the built towers instead of downloading them
(sgm calls ``from_pretrained`` / ``open_clip.create_model_and_transforms``); the rest follows sgm.
"""

import torch
from torch import nn

from ldm.modules.diffusionmodules.util import timestep_embedding


class AbstractEmbModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.input_key = None
        self.legacy_ucg_val = None


class GeneralConditioner(nn.Module):
    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, embedders):
        super().__init__()
        for embedder in embedders:
            embedder.eval()
            for param in embedder.parameters():
                param.requires_grad = False
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch, force_zero_embeddings=None):
        output = {}
        force_zero_embeddings = force_zero_embeddings or []
        for embedder in self.embedders:
            with torch.no_grad():
                if getattr(embedder, "input_key", None) is not None:
                    emb_out = embedder(batch[embedder.input_key])
                else:
                    emb_out = embedder(*[batch[k] for k in embedder.input_keys])
            if not isinstance(emb_out, (list, tuple)):
                emb_out = [emb_out]
            for emb in emb_out:
                out_key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if getattr(embedder, "input_key", None) in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                if out_key in output:
                    output[out_key] = torch.cat((output[out_key], emb), self.KEY2CATDIM[out_key])
                else:
                    output[out_key] = emb
        return output


class FrozenCLIPEmbedder(AbstractEmbModel):
    def __init__(self, transformer, tokenizer, layer="hidden", layer_idx=11, always_return_pooled=False):
        super().__init__()
        self.tokenizer, self.transformer = tokenizer, transformer
        self.max_length = 77
        self.layer, self.layer_idx = layer, layer_idx
        self.return_pooled = always_return_pooled
        if layer == "hidden":
            assert layer_idx is not None and 0 <= abs(layer_idx) <= 12


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    def __init__(self, model, layer="penultimate", always_return_pooled=True, legacy=False):
        super().__init__()
        self.model = model  # open_clip CLIP, ``visual`` deleted
        self.max_length = 77
        self.return_pooled = always_return_pooled
        self.layer = layer
        self.layer_idx = {"last": 0, "penultimate": 1}[layer]
        self.legacy = legacy

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        if self.legacy:
            return self.model.ln_final(x[self.layer])
        o = self.model.ln_final(x["last"])
        x["pooled"] = self.pool(o, text)
        return x

    def pool(self, x, text):
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)
            x = r(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """Embeds each number of [B, d] on its own (``Timestep``: sinusoidal, ``outdim`` wide) and
    concatenates them: [B, d * outdim]."""

    def __init__(self, outdim, input_key):
        super().__init__()
        self.outdim = outdim
        self.input_key = input_key

    def forward(self, x):
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        emb = timestep_embedding(x.reshape(b * dims), self.outdim)
        return emb.reshape(b, dims * self.outdim)
