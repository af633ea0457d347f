"""Mirrors modules/sd_hijack_open_clip.py: the WebUI's wrappers of open_clip text encoders, over
the real open_clip 2.20 tokenizer (``open_clip.tokenizer._tokenizer``).

- ``FrozenOpenCLIPEmbedderWithCustomWords`` (SD 2.x, around ldm's ``FrozenOpenCLIPEmbedder``):
  ids 49406 / 49407, pad 0 (written after the first end token by ``process_tokens``); the
  conditioning is ``wrapped.encode_with_transformer`` (ldm's: 23 of 24 blocks, then ``ln_final``).
- ``FrozenOpenCLIPEmbedder2WithCustomWords`` (SDXL's bigG, around sgm's ``FrozenOpenCLIPEmbedder2``):
  the same ids; returns ``d[wrapped.layer]`` with ``.pooled`` set from ``d["pooled"]``.
"""

import torch

from modules import devices, sd_hijack_clip
from modules.shared import opts
from tsam_ext.runtime import openclip

tokenizer = openclip.load().tokenizer._tokenizer


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        self.comma_token = [v for k, v in tokenizer.encoder.items() if k == ",</w>"][0]
        self.id_start = tokenizer.encoder["<start_of_text>"]
        self.id_end = tokenizer.encoder["<end_of_text>"]
        self.id_pad = 0

    def tokenize(self, texts):
        assert not opts.use_old_emphasis_implementation, "Old emphasis implementation not supported for Open Clip"
        return [tokenizer.encode(text) for text in texts]

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)

    def encode_embedding_init_text(self, init_text, nvpt):
        ids = torch.asarray([tokenizer.encode(init_text)], device=devices.device, dtype=torch.int)
        return self.wrapped.model.token_embedding.wrapped(ids).squeeze(0)


class FrozenOpenCLIPEmbedder2WithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        self.comma_token = [v for k, v in tokenizer.encoder.items() if k == ",</w>"][0]
        self.id_start = tokenizer.encoder["<start_of_text>"]
        self.id_end = tokenizer.encoder["<end_of_text>"]
        self.id_pad = 0

    def tokenize(self, texts):
        assert not opts.use_old_emphasis_implementation, "Old emphasis implementation not supported for Open Clip"
        return [tokenizer.encode(text) for text in texts]

    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        z = d[self.wrapped.layer]
        pooled = d.get("pooled")
        if pooled is not None:
            z.pooled = pooled
        return z

    def encode_embedding_init_text(self, init_text, nvpt):
        ids = torch.asarray([tokenizer.encode(init_text)], device=devices.device, dtype=torch.int)
        weight = self.wrapped.model.token_embedding.wrapped.weight
        return self.wrapped.model.token_embedding.wrapped(ids.to(weight.device)).squeeze(0)
