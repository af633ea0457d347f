"""One T-SAM guidance step, host-free: z <- z - alpha_t * grad_z L, repeated when refining.

``z`` [B, C, h, w] is the UNet-input latent of B images (for k-diffusion samplers x * c_in).
A *row* is one conditional UNet input: an image with one prompt (an AND sub-prompt is a row of
its own); each row carries the text targets of its 77-token chunks. All rows of a pass run as
one UNet batch (split on out-of-memory); the loss of an image is the sum over its rows and
chunks, and its gradient is the image's own.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .loss import MIN_TOKENS, chunk_loss
from .recorder import Recorder
from .schedule import Refinement, refinement_threshold

CHUNK = 77
TOO_SHORT = {"reference": "prompt has fewer than 3 tokens (the reference loss needs a token pair before a third)",
             "paper": "prompt has fewer than 2 tokens"}


@dataclass(frozen=True)
class ChunkTarget:
    """T [n, n] of one chunk; ``offset`` is the position of its ``<bos>`` on the cond token axis;
    ``labels`` name its n tokens (for diagnostics)."""
    t: torch.Tensor
    offset: int
    labels: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return self.t.shape[0]

    @property
    def window(self) -> slice:
        """This chunk's 77 positions on the cond token axis (``<bos>`` first)."""
        return slice(self.offset, self.offset + CHUNK)


@dataclass(frozen=True)
class RowTarget:
    """The chunks of one conditional row; ``image`` is the row's index into z."""
    image: int
    chunks: tuple[ChunkTarget, ...]

    def guided(self, loss: str) -> bool:
        return any(c.n >= MIN_TOKENS[loss] for c in self.chunks)


@dataclass
class BatchLimit:
    """How many images one pass may hold; halved on out-of-memory and kept for the sampling pass."""
    images: int | None = None


@dataclass
class StepOutcome:
    """What a guidance step did. ``delta`` [B, C, h, w] (float32) is the total change of z, and
    ``z`` the moved latent z + delta (z's dtype); a host that keeps its own latent applies ``delta``."""
    delta: torch.Tensor
    z: torch.Tensor | None = None
    losses: dict[int, list[float]] = field(default_factory=dict)  # image -> loss of every pass
    skipped: dict[int, str] = field(default_factory=dict)         # image -> why it was not moved
    passes: int = 0
    interrupted: bool = False
    maps: dict[int, torch.Tensor] = field(default_factory=dict)   # row -> its first-pass maps [gh, gw, S]


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


@contextmanager
def frozen(module: torch.nn.Module):
    """Parameters need no gradient during guidance: autograd then keeps no activation for them."""
    thawed = [p for p in module.parameters() if p.requires_grad]
    for p in thawed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in thawed:
            p.requires_grad_(True)


def row_losses(maps: torch.Tensor, rows: Sequence[RowTarget], loss: str, smooth: bool) -> torch.Tensor:
    """Loss [R] of each row from the recorded maps [R, gh, gw, S]; chunks never mix."""
    out = []
    for r, row in enumerate(rows):
        terms = [chunk_loss(c.t.to(maps.device), maps[r, ..., c.window], loss, smooth)
                 for c in row.chunks if c.n >= MIN_TOKENS[loss]]
        out.append(torch.stack(terms).sum())
    return torch.stack(out)


def _loss_and_grad(z: torch.Tensor, images: list[int], rows: Sequence[RowTarget], run_unet, recorder: Recorder,
                   loss: str, smooth: bool, truncate: bool):
    """One forward + backward over ``images``: (loss [k], grad [k, C, h, w], {row: maps}) in float32."""
    position = {img: k for k, img in enumerate(images)}
    sel = [i for i, row in enumerate(rows) if row.image in position and row.guided(loss)]
    leaf = z[images].detach().requires_grad_(True)
    z_rows = leaf[[position[rows[i].image] for i in sel]]
    maps = recorder.run(lambda: run_unet(z_rows, sel), tuple(z.shape[-2:]), truncate=truncate)
    per_row = row_losses(maps, [rows[i] for i in sel], loss, smooth)
    owner = torch.tensor([position[rows[i].image] for i in sel], device=per_row.device)
    per_image = per_row.new_zeros(len(images)).index_add(0, owner, per_row)
    grad, = torch.autograd.grad(per_image.sum(), leaf)
    return per_image.detach(), grad.float(), dict(zip(sel, maps.detach()))


def _batched(z, images, rows, run_unet, recorder, loss, smooth, truncate, limit: BatchLimit):
    """``_loss_and_grad`` over groups of at most ``limit.images`` images, halving it on OOM."""
    while True:
        size = limit.images or len(images)
        try:
            parts = [_loss_and_grad(z, images[i:i + size], rows, run_unet, recorder, loss, smooth, truncate)
                     for i in range(0, len(images), size)]
            break
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not is_out_of_memory(e) or size == 1:
                raise
            limit.images = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    losses, grads, maps = zip(*parts)
    return torch.cat(losses), torch.cat(grads), {row: m for part in maps for row, m in part.items()}


def guidance_step(z: torch.Tensor, rows: Sequence[RowTarget], run_unet: Callable[[torch.Tensor, list[int]], object],
                  recorder: Recorder, alpha: float, *, loss: str = "reference", smooth: bool = True,
                  refinement: Refinement | None = None, truncate: bool = True,
                  should_stop: Callable[[], bool] | None = None, limit: BatchLimit | None = None,
                  keep_maps: bool = False) -> StepOutcome:
    """Move z down the T-SAM loss; returns the change (z itself is not modified).

    ``run_unet(z_rows, row_ids)`` runs the conditional UNet pass for the rows ``row_ids`` (indices
    into ``rows``) on ``z_rows`` [len(row_ids), C, h, w]; its output is ignored, the recorder
    reads the maps. Every image gets one update; with ``refinement`` it first gets up to
    ``refinement.iterations`` (+ ``extra``) more at the same alpha. An image whose prompt is too
    short to give a gradient (fewer than 2 tokens; 3 for the reference loss, whose 2-token term
    is constant), or whose loss or gradient is not finite, is left unchanged with a reason.
    """
    limit = limit or BatchLimit()
    out = StepOutcome(delta=torch.zeros(z.shape, dtype=torch.float32, device=z.device))
    images = sorted({r.image for r in rows})
    for img in range(z.shape[0]):
        if img not in images or not any(r.guided(loss) for r in rows if r.image == img):
            out.skipped[img] = TOO_SHORT[loss]
    active = [img for img in images if img not in out.skipped]
    budget = {img: 1 + (refinement.iterations if refinement else 0) for img in active}
    threshold = {img: refinement_threshold(c.n for r in rows if r.image == img for c in r.chunks) for img in active}
    base = z.detach().float()
    with frozen(recorder.unet), torch.enable_grad():
        while active:
            if should_stop is not None and should_stop():
                out.interrupted = True
                break
            current = (base + out.delta).to(z.dtype)
            losses, grads, maps = _batched(current, active, rows, run_unet, recorder, loss, smooth, truncate, limit)
            if keep_maps and not out.maps:
                out.maps = maps
            out.passes += 1
            for k, img in enumerate(list(active)):
                value, grad = float(losses[k]), grads[k]
                if not math.isfinite(value) or not torch.isfinite(grad).all():
                    out.delta[img] = 0
                    out.skipped[img] = "loss or gradient is not finite"
                    active.remove(img)
                    continue
                history = out.losses.setdefault(img, [])
                history.append(value)
                out.delta[img] -= alpha * grad
                done = len(history)
                if refinement and done == refinement.iterations and refinement.extend(value, threshold[img]):
                    budget[img] += refinement.extra
                if done >= budget[img] or (refinement and refinement.converged(history)):
                    active.remove(img)
    out.z = (base + out.delta).to(z.dtype)
    return out
