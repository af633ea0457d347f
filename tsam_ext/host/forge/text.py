"""Forge's text encoders for T (``host.text_targets``).

Forge encodes prompts with ``ClassicTextProcessingEngine``s (backend/text_processing/
classic_engine.py): SD 1.x and SD 2.x have one (``sd_model.text_processing_engine``: CLIP ViT-L,
OpenCLIP ViT-H), SDXL two (``text_processing_engine_l`` CLIP ViT-L, ``_g`` OpenCLIP ViT-bigG,
conditioned as cat(l, g) on the channel axis), the SDXL refiner ``_g`` only. Every engine's
``text_encoder.transformer`` is a transformers ``CLIPTextModel`` (Forge converts OpenCLIP to it),
so one reader (``families.clip``) reads them all, over every layer. Its ``tokenize_line`` makes
the chunks; textual-inversion vectors go in through ``engine.embeddings.fixes``, as Forge's
encoder does.
"""

import torch

from backend import memory_management

from ...families.clip import clip_self_attention
from ...families.encoders import BIGG, CLIP_L, OPENCLIP_H
from ...families.open_clip import pad_after_end
from .. import text_targets
from ..text_targets import Encoder, UnsupportedText

ENGINES = (("text_processing_engine_l", CLIP_L), ("text_processing_engine_g", BIGG))  # SDXL's, in cat order


def encoders(sd_model) -> list[Encoder]:
    """The text engines whose output conditions the UNet, in the order Forge concatenates them."""
    found = [Encoder(name, getattr(sd_model, attr)) for attr, name in ENGINES if hasattr(sd_model, attr)]
    if not found and hasattr(sd_model, "text_processing_engine"):
        found = [Encoder(OPENCLIP_H if getattr(sd_model, "is_sd2", False) else CLIP_L, sd_model.text_processing_engine)]
    if not found:
        raise UnsupportedText("the model has no text engine T-SAM can read")
    for e in found:
        if not hasattr(getattr(getattr(e.wrapper, "text_encoder", None), "transformer", None), "text_model"):
            raise UnsupportedText(f"the text engine {type(e.wrapper).__name__} has no CLIP text model T-SAM can read")
    return found


def self_attention(engine, chunks) -> torch.Tensor:
    """Self-attention [B, L, H, 77, 77] (float32) of the engine's CLIP over whole chunks,
    computed under inference mode as Forge encodes (its weights are inference tensors)."""
    text_model = engine.text_encoder.transformer
    embeddings = text_model.text_model.embeddings
    device = memory_management.text_encoder_device()
    ids = pad_after_end(torch.asarray([c.tokens for c in chunks]), engine.id_end, engine.id_pad)  # as process_tokens
    with torch.inference_mode():
        # what the engine does before every encode (encode_with_transformers): without it a prompt
        # read before the first generation would run in the fp16 the CLIP is stored in on CPU
        embeddings.position_ids = embeddings.position_ids.to(device=device)
        embeddings.position_embedding = embeddings.position_embedding.to(dtype=torch.float32)
        embeddings.token_embedding = embeddings.token_embedding.to(dtype=torch.float32)
        engine.embeddings.fixes = [c.fixes for c in chunks]
        try:
            return clip_self_attention(text_model, ids.to(device))
        finally:
            engine.embeddings.fixes = None


class TextTargets(text_targets.TextTargets):
    available = staticmethod(encoders)

    def load(self) -> None:
        """The text encoders where Forge's memory manager puts them for encoding."""
        memory_management.load_model_gpu(self.sd_model.forge_objects.clip.patcher)

    def attention(self, encoder: Encoder, chunks) -> torch.Tensor:
        return self_attention(encoder.wrapper, chunks)
