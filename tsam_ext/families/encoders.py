"""Which text encoders give T, by name: ``clip-l`` (CLIP ViT-L through transformers: SD 1.x, and
SDXL's first encoder), ``openclip-h`` (OpenCLIP ViT-H: SD 2.x), ``bigg`` (OpenCLIP ViT-bigG:
SDXL's second encoder, the SDXL refiner's only one).

A model with one text encoder always uses it. For SDXL base, the setting "Text encoder for T"
picks both (T from the mean of the two encoders' means, ``core.text_maps.text_target``), CLIP-L
or bigG. Both encoders tokenize with the same BPE and A1111 chunks both prompts with the same
code, so position i of each encoder's chunk is the same token, and the UNet's cross-attention
key at position i is computed from both encoders' features of it.
"""

from typing import Sequence

CLIP_L, OPENCLIP_H, BIGG = "clip-l", "openclip-h", "bigg"
BOTH = "both"
FALLBACK = BIGG  # when two encoders' chunks disagree: bigG's 1280 of the 2048 channels of every key


def chosen(available: Sequence[str], choice: str) -> tuple[str, ...]:
    """The encoders whose attention forms T: the only one of a one-encoder model, whatever the
    choice; of two, both for "both", else the one named (which the model must have)."""
    available = tuple(available)
    if len(available) < 2 or choice == BOTH:
        return available
    if choice not in available:
        raise ValueError(f"text encoder {choice!r} is not one of this model's ({', '.join(available)})")
    return (choice,)


def aligned(tokens: dict[str, list[tuple[int, ...]]], names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` if every encoder of ``names`` cut the text into the same chunk tokens; otherwise
    the positions do not correspond and only one encoder can give T: ``FALLBACK`` if present.
    ``tokens`` maps each encoder to its chunks' token ids (before any pad rewrite)."""
    if len({tuple(tokens[name]) for name in names}) <= 1:
        return names
    return (FALLBACK,) if FALLBACK in names else names[:1]
