"""Mirrors modules/sd_hijack.py (``model_hijack`` with ``hijack``'s wrapping of the text
encoders, ``EmbeddingsWithFixes``) and the part of modules/textual_inversion/textual_inversion.py
the tokenizer uses (``Embedding``, whose ``vec`` is a dict per encoder for SDXL embeddings,
``EmbeddingDatabase.find_embedding_at_position``). ``hijack`` tells the ldm encoders apart by
class name where upstream compares with ldm's classes (the stand-ins build their own)."""

import torch


class Embedding:
    def __init__(self, vec, name: str):
        self.vec, self.name = vec, name
        self.vectors = (next(iter(vec.values())) if isinstance(vec, dict) else vec).shape[0]
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

    def hijack(self, m):
        """Wrap the text encoders: SDXL's conditioner embedders (by class name), else
        ``cond_stage_model``; ``cond_stage_model`` is the conditioner, or its one text embedder
        (the SDXL refiner)."""
        from modules import sd_hijack_clip, sd_hijack_open_clip

        conditioner = getattr(m, "conditioner", None)
        if conditioner:
            text_cond_models = []
            for i, embedder in enumerate(conditioner.embedders):
                typename = type(embedder).__name__
                if typename == "FrozenOpenCLIPEmbedder":
                    embedder.model.token_embedding = EmbeddingsWithFixes(embedder.model.token_embedding, self)
                    conditioner.embedders[i] = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(embedder, self)
                    text_cond_models.append(conditioner.embedders[i])
                if typename == "FrozenCLIPEmbedder":
                    embeddings = embedder.transformer.text_model.embeddings
                    embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, self)
                    conditioner.embedders[i] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(embedder, self)
                    text_cond_models.append(conditioner.embedders[i])
                if typename == "FrozenOpenCLIPEmbedder2":
                    embedder.model.token_embedding = EmbeddingsWithFixes(embedder.model.token_embedding, self,
                                                                         textual_inversion_key="clip_g")
                    conditioner.embedders[i] = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(embedder, self)
                    text_cond_models.append(conditioner.embedders[i])
            m.cond_stage_model = text_cond_models[0] if len(text_cond_models) == 1 else conditioner
        elif type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedder":
            embeddings = m.cond_stage_model.transformer.text_model.embeddings
            embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, self)
            m.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        elif type(m.cond_stage_model).__name__ == "FrozenOpenCLIPEmbedder":
            m.cond_stage_model.model.token_embedding = EmbeddingsWithFixes(m.cond_stage_model.model.token_embedding, self)
            m.cond_stage_model = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)

    def undo_hijack(self, m):
        """The text encoders back to the model's own (before loading other weights into it)."""
        conditioner = getattr(m, "conditioner", None)
        if conditioner:
            for i, embedder in enumerate(conditioner.embedders):
                typename = type(embedder).__name__
                if typename in ("FrozenOpenCLIPEmbedderWithCustomWords", "FrozenOpenCLIPEmbedder2WithCustomWords"):
                    embedder.wrapped.model.token_embedding = embedder.wrapped.model.token_embedding.wrapped
                    conditioner.embedders[i] = embedder.wrapped
                if typename == "FrozenCLIPEmbedderForSDXLWithCustomWords":
                    embeddings = embedder.wrapped.transformer.text_model.embeddings
                    embeddings.token_embedding = embeddings.token_embedding.wrapped
                    conditioner.embedders[i] = embedder.wrapped
            if hasattr(m, "cond_stage_model"):
                delattr(m, "cond_stage_model")
        elif type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedderWithCustomWords":
            m.cond_stage_model = m.cond_stage_model.wrapped
            embeddings = m.cond_stage_model.transformer.text_model.embeddings
            if type(embeddings.token_embedding) == EmbeddingsWithFixes:
                embeddings.token_embedding = embeddings.token_embedding.wrapped
        elif type(m.cond_stage_model).__name__ == "FrozenOpenCLIPEmbedderWithCustomWords":
            m.cond_stage_model.wrapped.model.token_embedding = m.cond_stage_model.wrapped.model.token_embedding.wrapped
            m.cond_stage_model = m.cond_stage_model.wrapped


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
                vec = embedding.vec[self.textual_inversion_key] if isinstance(embedding.vec, dict) else embedding.vec
                emb = vec.to(tensor)
                n = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[:offset + 1], emb[:n], tensor[offset + 1 + n:]])
            rows.append(tensor)
        return torch.stack(rows)
