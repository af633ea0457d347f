"""A second, deliberately naive implementation of method.md (loops, per-pair torch calls), in
float64, written from the spec and the authors' code rather than from tsam_ext."""

import math

import torch
import torch.nn.functional as F


def text_target(self_attn, n, gamma, order):
    L, H = self_attn.shape[:2]
    mean = sum(self_attn[l, h].double() for l in range(L) for h in range(H)) / (L * H)
    t = mean[1:n + 1, 1:n + 1]
    if order == "reference":
        w = t ** gamma
        return w / (w.sum(1).unsqueeze(1) + 1e-7)
    return (t / t.sum(1).unsqueeze(1)) ** gamma


def gaussian_kernel(kernel_size=3, sigma=0.5):
    """The authors' GaussianSmoothing kernel, built the way their code builds it."""
    kernel = 1
    grids = torch.meshgrid([torch.arange(kernel_size, dtype=torch.float64)] * 2, indexing="ij")
    for g in grids:
        mean = (kernel_size - 1) / 2
        kernel = kernel * 1 / (sigma * math.sqrt(2 * math.pi)) * torch.exp(-(((g - mean) / (2 * sigma)) ** 2))
    return kernel / kernel.sum()


def token_cosine(maps, n, smooth):
    maps = maps.double()
    k = gaussian_kernel()
    vecs = []
    for i in range(1, n + 1):
        m = maps[:, :, i]
        if smooth:
            m = F.conv2d(F.pad(m[None, None], (1, 1, 1, 1), mode="reflect"), k[None, None])[0, 0]
        vecs.append(m.reshape(-1))
    c = torch.eye(n, dtype=torch.float64)
    c = [[c[i, j] for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                c[i][j] = F.cosine_similarity(vecs[i], vecs[j], dim=0)
    return torch.stack([torch.stack(row) for row in c])


def row_normalize(c):
    return torch.stack([c[i] / c[i].sum() for i in range(c.shape[0])])


def paper_loss(t, s):
    n = t.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(1, n + 1):
        for j in range(1, i + 1):
            total = total + (i / n) * (t[i - 1, j - 1].double() - s[i - 1, j - 1].double()).abs()
    return total


def reference_loss(t, c):
    n = t.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for r in range(1, n):
        total = total + 0.2 * r * (1 - F.cosine_similarity(t[r, :r].double(), c[r, :r].double(), dim=0))
    return total


def step_sizes(alpha, n):
    import numpy as np
    return alpha * np.sqrt(np.linspace(1.0, 0.5, n))


def text_target_of_encoders(self_attns, n, gamma, order):
    """T' of several text encoders, naively: each encoder's mean over its (layer, head) pairs, the
    mean of those means, then the same sharpening as ``text_target``."""
    means = []
    for a in self_attns:
        L, H = a.shape[:2]
        means.append(sum(a[l, h].double() for l in range(L) for h in range(H)) / (L * H))
    mean = sum(means) / len(means)
    return text_target(mean[None, None], n, gamma, order)


def open_clip_attention(model, ids):
    """[B, L, H, S, S]: every block of an open_clip text tower run by hand, each attention asked
    for its own weights (``need_weights=True, average_attn_weights=False``), as PyTorch computes them."""
    x = model.token_embedding(ids) + model.positional_embedding
    x = x.permute(1, 0, 2)
    maps = []
    for block in model.transformer.resblocks:
        h = block.ln_1(x)
        out, weights = block.attn(h, h, h, need_weights=True, average_attn_weights=False, attn_mask=model.attn_mask)
        maps.append(weights)
        x = x + block.ls_1(out)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return torch.stack(maps, dim=1)


def clip_attention(text_model, ids):
    """[B, L, H, S, S] of a transformers CLIPTextModel, as it returns them (``output_attentions=True``)."""
    return torch.stack(text_model(input_ids=ids, output_attentions=True).attentions, dim=1)
