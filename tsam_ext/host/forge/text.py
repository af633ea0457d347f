"""Text targets for Forge's prompts, from the exact chunks Forge's own text engine builds.

An SD 1.x checkpoint in Forge encodes prompts with one ``ClassicTextProcessingEngine``
(``sd_model.text_processing_engine``, backend/text_processing/classic_engine.py): its
``tokenize_line`` makes the chunks (BREAK, emphasis, textual-inversion embeddings, comma padding,
75-token chunks), its ``text_encoder.transformer`` is a transformers ``CLIPTextModel`` (Forge
wraps every family's CLIP that way; SDXL has two engines, ``_l`` and ``_g``), and
textual-inversion vectors go in through ``engine.embeddings.fixes``, as Forge's encoder does.
"""

import torch

from backend import memory_management

from ...core.guidance import ChunkTarget
from ...core.text_maps import text_target
from ...families.clip import clip_self_attention
from ..prompts import chunk_targets


def chunk_ids(engine, chunks) -> torch.Tensor:
    """[B, 77] token ids of the chunks as the engine encodes them (``process_tokens``: the
    positions after the first end token become the pad token where the two differ)."""
    ids = torch.asarray([c.tokens for c in chunks])
    if engine.id_end != engine.id_pad:
        for row, c in enumerate(chunks):
            ids[row, c.tokens.index(engine.id_end) + 1:] = engine.id_pad
    return ids


def self_attention(engine, chunks) -> torch.Tensor:
    """Self-attention [B, L, H, 77, 77] (float32) of the engine's CLIP over whole chunks,
    computed under inference mode as Forge encodes (its weights are inference tensors)."""
    text_model = engine.text_encoder.transformer
    embeddings = text_model.text_model.embeddings
    device = memory_management.text_encoder_device()
    with torch.inference_mode():
        # what the engine does before every encode (encode_with_transformers): without it a prompt
        # read before the first generation would run in the fp16 the CLIP is stored in on CPU
        embeddings.position_ids = embeddings.position_ids.to(device=device)
        embeddings.position_embedding = embeddings.position_embedding.to(dtype=torch.float32)
        embeddings.token_embedding = embeddings.token_embedding.to(dtype=torch.float32)
        engine.embeddings.fixes = [c.fixes for c in chunks]
        try:
            return clip_self_attention(text_model, chunk_ids(engine, chunks).to(device))
        finally:
            engine.embeddings.fixes = None


class TextTargets:
    """T of every chunk of a text, computed once per distinct text of a generation."""

    def __init__(self, sd_model, gamma: float, order: str):
        self.sd_model, self.gamma, self.order = sd_model, gamma, order
        self.cache: dict[str, tuple[ChunkTarget, ...]] = {}

    def prepare(self, texts) -> None:
        """Encode every new text in one CLIP call, with the text encoder where Forge's memory
        manager puts it for encoding."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not todo:
            return
        engine = self.sd_model.text_processing_engine
        memory_management.load_model_gpu(self.sd_model.forge_objects.clip.patcher)
        per_text = [engine.tokenize_line(t)[0] for t in todo]
        attentions = self_attention(engine, [c for cs in per_text for c in cs])
        with torch.inference_mode(False):  # T is saved for the backward pass of guidance: a normal tensor
            targets = chunk_targets(per_text, engine.id_end, engine.tokenizer,
                                    lambda k, n: text_target(attentions[k], n, self.gamma, self.order))
        self.cache.update(zip(todo, targets))

    def __getitem__(self, text: str) -> tuple[ChunkTarget, ...]:
        self.prepare([text])
        return self.cache[text]
