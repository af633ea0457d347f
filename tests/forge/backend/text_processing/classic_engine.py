"""Mirrors backend/text_processing/classic_engine.py ``ClassicTextProcessingEngine`` (one CLIP
text encoder): its own ``EmbeddingDatabase`` whose ``fixes`` the CLIP's token embedding
(``CLIPEmbeddingForTextualInversion``) reads; ``tokenize_line`` (A1111's rules with the comma
backtrack fixed at 20: the A1111 stand-in's tokenizer over this engine's embeddings);
``process_texts``; ``__call__`` (chunk by chunk, ``embeddings.fixes`` set per chunk batch);
``process_tokens`` (pad after the first end token, "Original" emphasis, the pooled output kept) and
``encode_with_transformers`` (hidden state ``-max(clip_skip, minimal_clip_skip)``, final LayerNorm
when ``final_layer_norm``; with ``return_pooled`` the pooler output, through ``text_projection``
when asked and the key is not clip_l, and ``__call__`` returns (cond, first chunk's pooled))."""

import types

import torch

from backend import memory_management
from backend.text_processing.textual_inversion import CLIPEmbeddingForTextualInversion, EmbeddingDatabase
from reuse import a1111

_a1111 = {"__name__": __name__ + ".a1111"}
a1111("modules/sd_hijack_clip.py", _a1111)
PromptChunk, PromptChunkFix = _a1111["PromptChunk"], _a1111["PromptChunkFix"]


class ClassicTextProcessingEngine:
    def __init__(self, text_encoder, tokenizer, embedding_key="clip_l", minimal_clip_skip=1, clip_skip=1,
                 final_layer_norm=True, text_projection=False, return_pooled=False):
        self.embeddings = EmbeddingDatabase()
        self.embeddings.fixes = None
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.minimal_clip_skip, self.clip_skip, self.final_layer_norm = minimal_clip_skip, clip_skip, final_layer_norm
        self.embedding_key, self.text_projection, self.return_pooled = embedding_key, text_projection, return_pooled
        self.chunk_length = 75
        self.id_start, self.id_end, self.id_pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        embeddings = text_encoder.transformer.text_model.embeddings
        embeddings.token_embedding = CLIPEmbeddingForTextualInversion(embeddings.token_embedding, self.embeddings, embedding_key)
        self._lines = _a1111["FrozenCLIPEmbedderWithCustomWords"](types.SimpleNamespace(tokenizer=tokenizer),
                                                                  types.SimpleNamespace(embedding_db=self.embeddings))

    def empty_chunk(self):
        return self._lines.empty_chunk()

    def tokenize_line(self, line):
        return self._lines.tokenize_line(line)

    def process_texts(self, texts):
        return self._lines.process_texts(texts)

    def encode_with_transformers(self, tokens):
        embeddings = self.text_encoder.transformer.text_model.embeddings
        embeddings.position_ids = embeddings.position_ids.to(device=memory_management.text_encoder_device())
        outputs = self.text_encoder.transformer(tokens, output_hidden_states=True)
        z = outputs.hidden_states[-max(self.clip_skip, self.minimal_clip_skip)]
        if self.final_layer_norm:
            z = self.text_encoder.transformer.text_model.final_layer_norm(z)
        if self.return_pooled:
            pooled = outputs.pooler_output
            if self.text_projection and self.embedding_key != "clip_l":
                pooled = self.text_encoder.transformer.text_projection(pooled)
            z.pooled = pooled
        return z

    def process_tokens(self, batch_tokens, batch_multipliers):
        tokens = torch.asarray(batch_tokens)
        if self.id_end != self.id_pad:
            for row, t in enumerate(batch_tokens):
                tokens[row, t.index(self.id_end) + 1:] = self.id_pad
        z = self.encode_with_transformers(tokens)
        pooled = getattr(z, "pooled", None)
        multipliers = torch.asarray(batch_multipliers).to(z)
        original_mean = z.mean()
        z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
        z = z * (original_mean / z.mean())
        if pooled is not None:
            z.pooled = pooled
        return z

    def __call__(self, texts):
        batch_chunks, _ = self.process_texts(texts)
        zs = []
        for i in range(max(len(x) for x in batch_chunks)):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            self.embeddings.fixes = [x.fixes for x in batch_chunk]
            zs.append(self.process_tokens([x.tokens for x in batch_chunk], [x.multipliers for x in batch_chunk]))
        return (torch.hstack(zs), zs[0].pooled) if self.return_pooled else torch.hstack(zs)
