"""T of a generation's texts from the loaded model's text encoders, read through the host's own
wrappers of them, the same way in A1111 and Forge.

Each text goes through each chosen encoder's own ``tokenize_line`` (BREAK, emphasis,
textual-inversion embeddings, comma padding, 75-token chunks: both hosts keep A1111's chunking),
the chunks of all texts through the encoder in one batch (the backend's ``attention``), and T of
chunk k is ``text_target`` of the encoders' attentions for it: one encoder's (SD 1.x, SD 2.x, the
SDXL refiner, or the one "Text encoder for T" names), or the mean of SDXL's two. When the two
encoders cut a text differently their positions do not match and one of them gives T
(``families.encoders.aligned``). Nothing relies on the host's cond cache: a cached prompt still
gets its T.
"""

from dataclasses import dataclass

import torch

from ..core.guidance import CHUNK, ChunkTarget
from ..core.text_maps import text_target
from ..families.encoders import aligned, chosen
from .prompts import labels


class UnsupportedText(RuntimeError):
    """The model's text encoder is none T-SAM can read (CLIP through transformers, open_clip)."""


@dataclass(frozen=True)
class Encoder:
    """One text encoder of the loaded model: its name (``families.encoders``) and the host's
    wrapper of it (``tokenize_line``, ``id_end``, ``id_pad``)."""
    name: str
    wrapper: object


class TextTargets:
    """T of every chunk of a text, computed once per distinct text of a generation, from the
    encoders ``text_encoder`` picks (``families.encoders.chosen``). A backend says which encoders
    a model has (``available``), readies them for encoding (``load``) and reads their
    self-attention (``attention``)."""

    def __init__(self, sd_model, gamma: float, order: str, text_encoder: str = "both", warn=print):
        self.sd_model, self.gamma, self.order, self.warn = sd_model, gamma, order, warn
        available = self.available(sd_model)
        names = chosen([e.name for e in available], text_encoder)
        self.encoders = [e for e in available if e.name in names]
        self.cache: dict[str, tuple[ChunkTarget, ...]] = {}

    @staticmethod
    def available(sd_model) -> list[Encoder]:
        """The text encoders whose output conditions the UNet, in the order the host concatenates them."""
        raise NotImplementedError

    def load(self) -> None:
        """Put the text encoders where the host encodes with them (low-memory modes move them)."""

    def attention(self, encoder: Encoder, chunks) -> torch.Tensor:
        """Self-attention [B, L, H, 77, 77] of the encoder over whole chunks (PromptChunks)."""
        raise NotImplementedError

    def vocabulary(self, encoder: Encoder):
        """Something with ``convert_ids_to_tokens``, for the tokens' labels."""
        return encoder.wrapper.tokenizer

    def prepare(self, texts) -> None:
        """Encode every new text, one batched call per encoder (before sampling: in low-memory
        modes the text encoders and the UNet take turns on the GPU)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not todo:
            return
        self.load()
        chunks = {e.name: [e.wrapper.tokenize_line(t)[0] for t in todo] for e in self.encoders}
        attention = {e.name: self.attention(e, [c for cs in chunks[e.name] for c in cs]) for e in self.encoders}
        first = {e.name: 0 for e in self.encoders}  # each encoder's row of the text's first chunk
        names = tuple(e.name for e in self.encoders)
        vocabulary = self.vocabulary(self.encoders[0])
        for i, text in enumerate(todo):
            used = aligned({n: [tuple(c.tokens) for c in chunks[n][i]] for n in names}, names)
            if used != names:
                self.warn(f"the text encoders cut {text!r} into different tokens, so their positions do not match; "
                          f"T comes from {used[0]} alone")
            encoder = next(e for e in self.encoders if e.name == used[0])
            targets = []
            with torch.inference_mode(False):  # T is saved for guidance's backward pass: a normal tensor (Forge)
                for k, chunk in enumerate(chunks[used[0]][i]):
                    n = chunk.tokens.index(encoder.wrapper.id_end, 1) - 1
                    t = text_target([attention[name][first[name] + k] for name in used], n, self.gamma, self.order)
                    targets.append(ChunkTarget(t, CHUNK * k, labels(vocabulary, chunk, n)))
            for name in names:
                first[name] += len(chunks[name][i])
            self.cache[text] = tuple(targets)

    def __getitem__(self, text: str) -> tuple[ChunkTarget, ...]:
        self.prepare([text])
        return self.cache[text]
