"""Cross-attention similarity: C (cosine of token maps) and S (its row-normalisation), paper eqs. 4-6.

``maps`` [h, w, S] are the cross-attention probabilities of one image and one 77-token chunk,
averaged over the selected layers and heads; position 0 is ``<bos>``, 1..n the prompt tokens.
C and S are [n, n] with C[i-1, j-1] the similarity of tokens i and j.
"""

import math

import torch
import torch.nn.functional as F

from .precision import compute_dtype

COSINE_EPS = 1e-8  # torch.nn.CosineSimilarity's default, as the reference uses it


def smoothing_kernel(dtype=torch.float32, device=None) -> torch.Tensor:
    """The reference's 3x3 kernel [3, 3]: outer product of [e^-1, 1, e^-1] / (1 + 2 e^-1).

    It comes from exp(-(d / (2 sigma))^2) with sigma = 0.5 (note the 2 sigma: wider than a
    textbook sigma-0.5 Gaussian); kept exactly because the published numbers used it.
    """
    e = math.exp(-1.0)
    k1 = torch.tensor([e, 1.0, e], dtype=dtype, device=device) / (1.0 + 2.0 * e)
    return torch.outer(k1, k1)


def smooth_maps(maps: torch.Tensor) -> torch.Tensor:
    """Smooth token maps [n, h, w] with the reference kernel after reflect-padding by 1.

    Reflect padding needs at least 2 cells per side; a 1-cell grid is padded by replication.
    """
    x = maps.unsqueeze(1)
    mode = "reflect" if min(maps.shape[-2:]) >= 2 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    kernel = smoothing_kernel(maps.dtype, maps.device)[None, None]
    return F.conv2d(x, kernel).squeeze(1)


def token_cosine(maps: torch.Tensor, n_tokens: int, smooth: bool = True) -> torch.Tensor:
    """C [n, n]: cosine similarity of the (smoothed) maps of tokens 1..n; symmetric, unit diagonal."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be [h, w, S], got {tuple(maps.shape)}")
    if not 0 <= n_tokens <= maps.shape[-1] - 1:
        raise ValueError(f"n_tokens={n_tokens} does not fit {maps.shape[-1]} positions")
    token_maps = maps.to(compute_dtype(maps))[..., 1:n_tokens + 1].permute(2, 0, 1)
    if smooth and n_tokens:
        token_maps = smooth_maps(token_maps)
    flat = token_maps.reshape(n_tokens, -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    c = unit @ unit.T
    c = (c + c.T) / 2  # exactly symmetric: the matmul's two triangles may round apart
    eye = torch.eye(n_tokens, dtype=c.dtype, device=c.device, requires_grad=False)
    return c * (1 - eye) + eye



def row_normalize(c: torch.Tensor) -> torch.Tensor:
    """S [n, n] = C / (sum over the whole row of C), paper eq. 6."""
    return c / c.sum(dim=1, keepdim=True)
