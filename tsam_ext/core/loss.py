"""The two T-SAM losses over one chunk (T and C/S are [n, n], token i at index i-1).

Both are differentiable scalars in the compute dtype, 0 for a chunk with fewer than 2 tokens.
"""

import torch

from .cross_maps import COSINE_EPS, row_normalize, token_cosine
from .precision import compute_dtype

LOSSES = ("reference", "paper")
# Fewest prompt tokens with a gradient: the reference loss compares rows' strictly-lower parts,
# so a 2-token chunk has one constant term; the paper loss has pairs from 2 tokens on.
MIN_TOKENS = {"reference": 3, "paper": 2}


def paper_loss(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Paper eq. 7: sum over i, j <= i of (i / n) |T[i, j] - S[i, j]| (diagonal included)."""
    dtype = compute_dtype(t, s)
    t, s = t.to(dtype), s.to(dtype)
    n = t.shape[0]
    if n < 2:
        return torch.zeros((), dtype=dtype, device=t.device)
    row_weight = torch.arange(1, n + 1, dtype=dtype, device=t.device) / n
    return (row_weight[:, None] * (t - s).abs()).tril().sum()


def reference_loss(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The authors' loss: sum over rows i = 2..n of 0.2 (i-1) (1 - cos(T[i, :i-1], C[i, :i-1])).

    Only the strictly-lower part of each row is compared, with torch's cosine (eps 1e-8 per
    vector norm); row 2 has one element, so its term is constant and gives no gradient.
    """
    dtype = compute_dtype(t, c)
    t, c = t.to(dtype), c.to(dtype)
    n = t.shape[0]
    if n < 2:
        return torch.zeros((), dtype=dtype, device=t.device)
    t_low, c_low = t.tril(-1)[1:], c.tril(-1)[1:]
    t_unit = t_low / t_low.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    c_unit = c_low / c_low.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    cos = (t_unit * c_unit).sum(dim=1)
    row_weight = 0.2 * torch.arange(1, n, dtype=dtype, device=t.device)
    return (row_weight * (1 - cos)).sum()


def chunk_loss(t: torch.Tensor, maps: torch.Tensor, kind: str = "reference", smooth: bool = True) -> torch.Tensor:
    """The loss of one chunk from its target T [n, n] and its cross-attention maps [h, w, S]."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    c = token_cosine(maps, t.shape[0], smooth=smooth)
    return reference_loss(t, c) if kind == "reference" else paper_loss(t, row_normalize(c))
