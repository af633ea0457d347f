"""The text target T: the CLIP text encoder's own self-attention (paper eqs. 1-3).

Index convention for one 77-token chunk: position 0 is ``<bos>``, positions 1..n are the
prompt's tokens, position n+1 is the first ``<eos>``, the rest is padding. T keeps rows and
columns 1..n only, so T[i-1, j-1] is how much token i attends to token j (j <= i: causal).
"""

import torch

from .precision import compute_dtype

ORDERS = ("reference", "paper")


def text_target(self_attn: torch.Tensor, n_tokens: int, gamma: float = 3.0, order: str = "reference") -> torch.Tensor:
    """T [n, n] from ``self_attn`` [L, H, S, S], the self-attention probabilities of one chunk.

    The mean over every layer and head is cut to positions 1..n, then sharpened by ``gamma``:
    ``order="reference"`` raises to gamma and row-normalises (+1e-7), as the authors' code;
    ``order="paper"`` row-normalises and then raises to gamma (the paper's eqs. 2-3, where the
    power is applied in the loss; rows then no longer sum to 1).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if self_attn.dim() != 4 or self_attn.shape[-1] != self_attn.shape[-2]:
        raise ValueError(f"self_attn must be [L, H, S, S], got {tuple(self_attn.shape)}")
    if not 0 <= n_tokens <= self_attn.shape[-1] - 1:
        raise ValueError(f"n_tokens={n_tokens} does not fit a chunk of {self_attn.shape[-1]} positions")
    mean = self_attn.to(compute_dtype(self_attn)).mean(dim=(0, 1))
    t = mean[1:n_tokens + 1, 1:n_tokens + 1]
    if order == "reference":
        w = t ** gamma
        return w / (w.sum(dim=1, keepdim=True) + 1e-7)
    rows = t.sum(dim=1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    return (t / rows) ** gamma
