"""Mirrors backend/text_processing/textual_inversion.py ``Embedding`` (``vec``, ``name``, ``vectors``)
and ``EmbeddingDatabase.find_embedding_at_position`` (longest registered id sequence first): the
A1111 stand-in's (tests/a1111/modules/sd_hijack.py), whose ``EmbeddingsWithFixes`` is Forge's
``CLIPEmbeddingForTextualInversion`` (it reads ``embeddings.fixes``, inserts, then clears them)."""

from reuse import a1111

a1111("modules/sd_hijack.py", globals())

CLIPEmbeddingForTextualInversion = EmbeddingsWithFixes  # noqa: F821 - defined by the A1111 stand-in's file
