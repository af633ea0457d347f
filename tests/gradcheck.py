"""The guidance gradient against a central difference of the loss, through a host's UNet call."""

import torch

from tsam_ext.core import guidance


def finite_difference_check(z, rows, run_unet, recorder, gradient, eps=0.05):
    """(T-SAM's directional derivative, the loss's central difference) along ``gradient`` [B, C, h, w]
    and along a random direction, on the same UNet call ``run_unet`` (inside the guidance pass)."""
    def loss(zz):
        with torch.enable_grad():
            zz = zz.detach().requires_grad_(True)  # the pass's own input: other UNet runs are not recorded
            maps = recorder.run(lambda: run_unet(zz[[r.image for r in rows]], list(range(len(rows)))), tuple(z.shape[-2:]))
            return float(guidance.row_losses(maps, rows, "reference", True).sum())

    g = torch.Generator().manual_seed(0)
    out = []
    for d in (gradient / gradient.norm(), torch.randn(z.shape, generator=g)):
        d = d / d.norm()
        out.append((float((gradient * d).sum()), (loss(z + eps * d) - loss(z - eps * d)) / (2 * eps)))
    return out
