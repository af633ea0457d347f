"""The text target T: the text encoder's own self-attention (paper eqs. 1-3).

Index convention for one 77-token chunk: position 0 is ``<bos>``, positions 1..n are the
prompt's tokens, position n+1 is the first ``<eos>``, the rest is padding. T keeps rows and
columns 1..n only, so T[i-1, j-1] is how much token i attends to token j (j <= i: causal).
"""

from typing import Sequence

import torch

from .precision import compute_dtype

ORDERS = ("reference", "paper")


def encoder_mean(self_attn: torch.Tensor) -> torch.Tensor:
    """[S, S]: the mean over every layer and head of one encoder's ``self_attn`` [L, H, S, S]."""
    if self_attn.dim() != 4 or self_attn.shape[-1] != self_attn.shape[-2]:
        raise ValueError(f"self_attn must be [L, H, S, S], got {tuple(self_attn.shape)}")
    return self_attn.to(compute_dtype(self_attn)).mean(dim=(0, 1))


def text_target(self_attn: torch.Tensor | Sequence[torch.Tensor], n_tokens: int, gamma: float = 3.0,
                order: str = "reference") -> torch.Tensor:
    """T [n, n] from the self-attention probabilities of one chunk.

    ``self_attn`` is one encoder's [L, H, S, S], or a sequence of them, one per text encoder of
    the model (SDXL: CLIP-L's [12, 12, S, S] and bigG's [32, 20, S, S]): each encoder's mean over
    its layers and heads, then the plain mean of those means, so every encoder counts the same
    whatever its number of layers and heads (the encoders' positions must be the same tokens).
    The mean is cut to positions 1..n, then sharpened by ``gamma``: ``order="reference"`` raises
    to gamma and row-normalises (+1e-7), as the authors' code; ``order="paper"`` row-normalises
    and then raises to gamma (the paper's eqs. 2-3, where the power is applied in the loss; rows
    then no longer sum to 1).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    per_encoder = [self_attn] if isinstance(self_attn, torch.Tensor) else list(self_attn)
    if not per_encoder:
        raise ValueError("no text encoder's self-attention given")
    means = [encoder_mean(a) for a in per_encoder]
    if len({m.shape for m in means}) != 1:
        raise ValueError(f"the encoders' chunks differ in length: {[tuple(m.shape) for m in means]}")
    mean = torch.stack(means).mean(dim=0)
    if not 0 <= n_tokens <= mean.shape[-1] - 1:
        raise ValueError(f"n_tokens={n_tokens} does not fit a chunk of {mean.shape[-1]} positions")
    t = mean[1:n_tokens + 1, 1:n_tokens + 1]
    if order == "reference":
        w = t ** gamma
        return w / (w.sum(dim=1, keepdim=True) + 1e-7)
    rows = t.sum(dim=1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    return (t / rows) ** gamma
