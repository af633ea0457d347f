"""Mirrors modules/sd_hijack.py (``model_hijack``, ``EmbeddingsWithFixes``) and the part of
modules/textual_inversion/textual_inversion.py the tokenizer uses (``Embedding``,
``EmbeddingDatabase.find_embedding_at_position``)."""

import torch


class Embedding:
    def __init__(self, vec: torch.Tensor, name: str):
        self.vec, self.name = vec, name
        self.vectors = vec.shape[0]
        self.shorthash = None


class EmbeddingDatabase:
    def __init__(self):
        self.ids_lookup: dict[int, list] = {}

    def register(self, embedding: Embedding, ids: list[int]) -> None:
        """Make the token ids of the embedding's name resolve to it (longest match first)."""
        self.ids_lookup.setdefault(ids[0], []).append((ids, embedding))
        self.ids_lookup[ids[0]].sort(key=lambda x: len(x[0]), reverse=True)

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self.ids_lookup.get(tokens[offset], []):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None


class StableDiffusionModelHijack:
    def __init__(self):
        self.fixes = None
        self.comments = []
        self.extra_generation_params = {}
        self.embedding_db = EmbeddingDatabase()


model_hijack = StableDiffusionModelHijack()


class EmbeddingsWithFixes(torch.nn.Module):
    """Replaces CLIP's token embedding; inserts textual-inversion vectors where ``fixes`` say
    (a fix at ``offset`` lands at position offset + 1, after <bos>), then clears the fixes."""

    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped, self.embeddings, self.textual_inversion_key = wrapped, embeddings, textual_inversion_key

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None
        inputs_embeds = self.wrapped(input_ids)
        if not batch_fixes or max(len(x) for x in batch_fixes) == 0:
            return inputs_embeds
        rows = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                emb = embedding.vec.to(tensor)
                n = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[:offset + 1], emb[:n], tensor[offset + 1 + n:]])
            rows.append(tensor)
        return torch.stack(rows)
