"""A1111's text encoders for T (``host.text_targets``).

The loaded model's text encoders are the WebUI's own wrappers: SD 1.x's CLIP ViT-L
(``cond_stage_model``), SD 2.x's OpenCLIP ViT-H (``cond_stage_model``), SDXL's CLIP ViT-L and
OpenCLIP ViT-bigG (the text embedders of ``conditioner``; the refiner has bigG only). Chunk ids
are rewritten as the WebUI feeds them (open_clip: 0 after the first end token),
textual-inversion vectors are inserted through ``model_hijack.fixes`` as the WebUI does, and
every layer of the tower is read (the WebUI itself stops SD 2.x's one block early).
"""

from types import SimpleNamespace

import torch

from modules import devices, sd_hijack

from ...families.clip import clip_self_attention
from ...families.encoders import BIGG, CLIP_L, OPENCLIP_H
from ...families.open_clip import open_clip_self_attention, pad_after_end
from .. import text_targets
from ..text_targets import Encoder, UnsupportedText


def encoders(sd_model) -> list[Encoder]:
    """The text encoders whose output conditions the UNet, in the conditioner's order."""
    conditioner = getattr(sd_model, "conditioner", None)
    wrappers = ([e for e in conditioner.embedders if hasattr(e, "tokenize_line")] if conditioner is not None
                else [getattr(sd_model, "cond_stage_model", None)])
    found = []
    for w in wrappers:
        wrapped = getattr(w, "wrapped", None)
        if hasattr(getattr(wrapped, "transformer", None), "text_model"):
            found.append(Encoder(CLIP_L, w))
        elif hasattr(getattr(getattr(wrapped, "model", None), "transformer", None), "resblocks"):
            found.append(Encoder(BIGG if conditioner is not None else OPENCLIP_H, w))
        else:
            raise UnsupportedText(f"the text encoder {type(w).__name__} is not one T-SAM can read (CLIP, OpenCLIP)")
    if not found:
        raise UnsupportedText("the model has no text encoder")
    return found


def place_conditioner(sd_model) -> None:
    """Under --medvram / --medvram-sdxl / --lowvram the WebUI moves SDXL's text encoders to the GPU
    by a forward pre-hook on the whole ``conditioner`` (lowvram.py), which calling the embedders
    directly never fires: fire it, as the WebUI's own text pass does. (SD 1.x and 2.x hook the
    modules T-SAM calls itself: the CLIP transformer, open_clip's token embedding.)"""
    conditioner = getattr(sd_model, "conditioner", None)
    if conditioner is None or not getattr(sd_model, "lowvram", False):
        return
    for key, hook in list(conditioner._forward_pre_hooks.items()):
        if key in conditioner._forward_pre_hooks_with_kwargs:
            hook(conditioner, (), {})
        else:
            hook(conditioner, ())


class TextTargets(text_targets.TextTargets):
    available = staticmethod(encoders)

    def load(self) -> None:
        place_conditioner(self.sd_model)

    def attention(self, encoder: Encoder, chunks) -> torch.Tensor:
        w = encoder.wrapper
        ids = torch.asarray([c.tokens for c in chunks], device=devices.device)
        ids = pad_after_end(ids, w.id_end, w.id_pad)  # as process_tokens feeds the tower
        sd_hijack.model_hijack.fixes = [c.fixes for c in chunks]
        try:
            with devices.autocast():
                if encoder.name == CLIP_L:
                    return clip_self_attention(w.wrapped.transformer, ids)
                return open_clip_self_attention(w.wrapped.model, ids)
        finally:
            sd_hijack.model_hijack.fixes = None

    def vocabulary(self, encoder: Encoder):
        """The HF tokenizer, or open_clip's BPE."""
        tokenizer = getattr(encoder.wrapper, "tokenizer", None)
        if tokenizer is not None:
            return tokenizer
        from modules import sd_hijack_open_clip

        decoder = sd_hijack_open_clip.tokenizer.decoder
        return SimpleNamespace(convert_ids_to_tokens=lambda ids: [decoder[i] for i in ids])
