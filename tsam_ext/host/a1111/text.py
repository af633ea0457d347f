"""Text targets for the WebUI's prompts, from the exact chunks the WebUI builds.

Each text goes through the model's own ``cond_stage_model.tokenize_line`` (BREAK, emphasis,
textual-inversion embeddings, comma padding, 75-token chunks) and its own CLIP transformer
with attentions returned, textual-inversion vectors inserted through ``model_hijack.fixes`` as
the WebUI does. Nothing relies on the WebUI's cond cache: a cached prompt still gets its T.
"""

import torch

from modules import devices, sd_hijack

from ...core.guidance import ChunkTarget
from ...core.text_maps import text_target
from ...families.clip import clip_self_attention
from ..prompts import chunk_targets


class TextTargets:
    """T of every chunk of a text, computed once per distinct text of a generation."""

    def __init__(self, sd_model, gamma: float, order: str):
        self.sd_model, self.gamma, self.order = sd_model, gamma, order
        self.cache: dict[str, tuple[ChunkTarget, ...]] = {}

    def prepare(self, texts) -> None:
        """Encode every new text in one CLIP call (before sampling: with --medvram the text
        encoder and the UNet take turns on the GPU)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not todo:
            return
        cm = self.sd_model.cond_stage_model
        per_text = [cm.tokenize_line(t)[0] for t in todo]
        chunks = [c for cs in per_text for c in cs]
        ids = torch.asarray([c.tokens for c in chunks], device=devices.device)
        sd_hijack.model_hijack.fixes = [c.fixes for c in chunks]
        try:
            with devices.autocast():
                attentions = clip_self_attention(cm.wrapped.transformer, ids)
        finally:
            sd_hijack.model_hijack.fixes = None
        targets = chunk_targets(per_text, cm.id_end, cm.tokenizer,
                                lambda k, n: text_target(attentions[k], n, self.gamma, self.order))
        self.cache.update(zip(todo, targets))

    def __getitem__(self, text: str) -> tuple[ChunkTarget, ...]:
        self.prepare([text])
        return self.cache[text]

