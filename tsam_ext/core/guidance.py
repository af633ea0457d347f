"""One T-SAM guidance step, host-free: z <- z - alpha_t * grad_z L, repeated when refining.

``z`` [B, C, h, w] is the UNet-input latent of B images (for k-diffusion samplers x * c_in).
A *row* is one conditional UNet input: an image with one prompt (an AND sub-prompt is a row of
its own); each row carries the text targets of its 77-token chunks. All rows of a pass run as
one UNet batch; the loss of an image is the sum over its rows and chunks, times its length factor
(``length.loss_factor``: 1 for the reference's prompts), and its gradient is the image's own.

Out of memory, a pass falls back by itself, and the sampling pass keeps what it learnt
(``BatchLimit``): first activation checkpointing over the transformer blocks (same gradient),
then smaller groups of images, down to one; when even that does not fit, the step is skipped
with a reason and the image goes on unguided at that step. A float16 UNet backward scales the
loss (its small gradients would underflow) and lowers the scale when a gradient overflows.
"""

import gc
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .checkpointing import checkpointed
from .length import loss_factor, threshold
from .loss import MIN_TOKENS, chunk_loss
from .recorder import Recorder
from .schedule import Refinement

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


def token_counts(rows: Sequence[RowTarget], image: int) -> list[int]:
    """n of every chunk of every row (AND sub-prompt) of ``image``."""
    return [c.n for r in rows if r.image == image for c in r.chunks]


# float16 loss scale: on CPU fp16 autocast (SD1.x layout, 64 channels, 32x32 latent) the unscaled
# gradient was 1.9-2.1% (relative L2) from float32's, 0.45-0.6% at 2**10, non-finite at 2**16.
FP16_LOSS_SCALE = 2.0 ** 10
FP16_SCALE_BACKOFF = 2.0 ** 5  # an overflow divides the scale by this (2**10 -> 2**5 -> 1)
OUT_OF_MEMORY = "out of memory with activation checkpointing and one image per pass"


@dataclass
class BatchLimit:
    """How a guidance pass fits the device, learnt in a sampling pass and kept for the rest of it:
    ``images`` per pass (None: all; halved on out-of-memory), ``checkpoint`` (activation
    checkpointing; set on out-of-memory or by the user) and the float16 ``loss_scale`` (lowered
    when a scaled gradient overflows)."""
    images: int | None = None
    checkpoint: bool = False
    loss_scale: float = FP16_LOSS_SCALE


class GuidanceOutOfMemory(RuntimeError):
    """Even the smallest, checkpointed pass did not fit."""


class GradientBlocked(RuntimeError):
    """The loss has no gradient to the latent (something in the UNet call cut it)."""


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
    notes: list[str] = field(default_factory=list)                # fallbacks taken (for the console)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error).lower()
                                                for m in ("out of memory", "can't allocate memory")))


def runs_in_float16(z: torch.Tensor, unet: torch.nn.Module) -> bool:
    """Whether the UNet computes in float16 (fp16 weights, or fp16 autocast on z's device)."""
    if any(p.dtype == torch.float16 for p in unet.parameters()):
        return True
    device = z.device.type
    try:
        return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
    except TypeError:  # torch < 2.4 (A1111 1.10.1 ships 2.1.2): only CUDA autocast, its own calls
        return device == "cuda" and torch.is_autocast_enabled() and torch.get_autocast_gpu_dtype() == torch.float16


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


def pass_gradient(z: torch.Tensor, images: list[int], rows: Sequence[RowTarget], run_unet, recorder: Recorder,
                  loss: str, smooth: bool, truncate: bool, scale: float = 1.0, length: str = "normalised"):
    """One forward + backward over ``images``: (loss [k] detached, grad [k, C, h, w] of the loss
    times ``scale`` or None, {row: maps}), each image's loss scaled by its ``length.loss_factor``.
    Reads no tensor's values, so it also runs on fake tensors (``memory_estimate``). A loss that
    does not depend on the latent raises ``GradientBlocked``."""
    position = {img: k for k, img in enumerate(images)}
    sel = [i for i, row in enumerate(rows) if row.image in position and row.guided(loss)]
    leaf = z[images].detach().requires_grad_(True)
    z_rows = leaf[[position[rows[i].image] for i in sel]]
    with recorder.fused():
        maps = recorder.run(lambda: run_unet(z_rows, sel), tuple(z.shape[-2:]), truncate=truncate)
        per_row = row_losses(maps, [rows[i] for i in sel], loss, smooth)
        owner = torch.tensor([position[rows[i].image] for i in sel], device=per_row.device)
        per_image = per_row.new_zeros(len(images)).index_add(0, owner, per_row)
        factors = [loss_factor(token_counts(rows, img), loss, length) for img in images]
        if any(f != 1 for f in factors):  # never touched at factor 1: the reference's prompts stay bit-identical
            per_image = per_image * per_image.new_tensor(factors)
        total = per_image.sum()
        if not total.requires_grad:
            raise GradientBlocked("the loss does not depend on the latent")
        grad, = torch.autograd.grad(total * scale if scale != 1 else total, leaf, allow_unused=True)
    return per_image.detach(), grad, dict(zip(sel, maps.detach()))


def _loss_and_grad(z, images, rows, run_unet, recorder, loss, smooth, truncate, scale=1.0, length="normalised"):
    """``pass_gradient`` in float32, the gradient divided by ``scale`` again. A loss whose
    gradient to the latent is exactly zero raises ``GradientBlocked``: guiding with it would
    move nothing, or not along the loss."""
    per_image, grad, maps = pass_gradient(z, images, rows, run_unet, recorder, loss, smooth, truncate, scale, length)
    if grad is None or not bool(grad.any()):
        raise GradientBlocked("the loss has no gradient to the latent")
    grad = grad.float() if scale == 1 else grad.float() / scale
    return per_image, grad, maps


def _fall_back(limit: BatchLimit, size: int, notes: list[str]) -> None:
    """The next, smaller way to run a pass that ran out of memory."""
    if not limit.checkpoint:
        limit.checkpoint = True
        notes.append("out of memory: the guidance pass now runs with activation checkpointing (slower, same result)")
    elif size > 1:
        limit.images = max(1, size // 2)
        notes.append(f"out of memory: guidance now runs {limit.images} image(s) per pass")
    else:
        raise GuidanceOutOfMemory(OUT_OF_MEMORY)
    gc.collect()  # the failed pass's tensors, held by the exception's frames until now
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _overflowed(parts) -> bool:
    """A finite loss with a non-finite gradient: the scaled backward overflowed float16."""
    return any(torch.isfinite(losses).all() and not torch.isfinite(grads).all() for losses, grads, _ in parts)


def _batched(z, images, rows, run_unet, recorder, loss, smooth, truncate, limit: BatchLimit, notes: list[str],
             length: str = "normalised"):
    """``_loss_and_grad`` over groups of at most ``limit.images`` images, falling back on
    out-of-memory (``_fall_back``) and lowering the float16 loss scale on overflow."""
    half = runs_in_float16(z, recorder.unet)
    while True:
        size, scale = limit.images or len(images), limit.loss_scale if half else 1.0
        try:
            with checkpointed(recorder.unet) if limit.checkpoint else nullcontext():
                parts = [_loss_and_grad(z, images[i:i + size], rows, run_unet, recorder, loss, smooth, truncate, scale,
                                        length) for i in range(0, len(images), size)]
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not is_out_of_memory(e):
                raise
            parts = None
        if parts is None:
            _fall_back(limit, size, notes)
        elif scale > 1 and _overflowed(parts):
            limit.loss_scale = max(1.0, scale / FP16_SCALE_BACKOFF)
        else:
            break
    losses, grads, maps = zip(*parts)
    return torch.cat(losses), torch.cat(grads), {row: m for part in maps for row, m in part.items()}


def guidance_step(z: torch.Tensor, rows: Sequence[RowTarget], run_unet: Callable[[torch.Tensor, list[int]], object],
                  recorder: Recorder, alpha: float, *, loss: str = "reference", smooth: bool = True,
                  refinement: Refinement | None = None, truncate: bool = True,
                  should_stop: Callable[[], bool] | None = None, limit: BatchLimit | None = None,
                  keep_maps: bool = False, movable: torch.Tensor | None = None,
                  length: str = "normalised") -> StepOutcome:
    """Move z down the T-SAM loss; returns the change (z itself is not modified).

    ``movable`` [B, 1 or C, h, w] in [0, 1] weighs each update where the host keeps part of the
    latent itself (inpainting's kept region, 0 there), when the UNet call does not already
    (a host that blends before the UNet gives ``run_unet`` the blend, whose gradient carries it).

    ``run_unet(z_rows, row_ids)`` runs the conditional UNet pass for the rows ``row_ids`` (indices
    into ``rows``) on ``z_rows`` [len(row_ids), C, h, w]; its output is ignored, the recorder
    reads the maps. Every image gets one update; with ``refinement`` it first gets up to
    ``refinement.iterations`` (+ ``extra``) more at the same alpha. An image whose prompt is too
    short to give a gradient (fewer than 2 tokens; 3 for the reference loss, whose 2-token term
    is constant), or whose loss or gradient is not finite, is left unchanged with a reason; so is
    every image when even the smallest checkpointed pass runs out of memory. ``length`` is the
    length scaling of the loss and the refinement threshold (``length.SCALINGS``).
    """
    limit = limit or BatchLimit()
    out = StepOutcome(delta=torch.zeros(z.shape, dtype=torch.float32, device=z.device))
    images = sorted({r.image for r in rows})
    for img in range(z.shape[0]):
        if img not in images or not any(r.guided(loss) for r in rows if r.image == img):
            out.skipped[img] = TOO_SHORT[loss]
    active = [img for img in images if img not in out.skipped]
    budget = {img: 1 + (refinement.iterations if refinement else 0) for img in active}
    stop_at = {img: threshold(token_counts(rows, img), loss, length) for img in active}
    base = z.detach().float()
    with frozen(recorder.unet), torch.enable_grad():
        while active:
            if should_stop is not None and should_stop():
                out.interrupted = True
                break
            current = (base + out.delta).to(z.dtype)
            try:
                losses, grads, maps = _batched(current, active, rows, run_unet, recorder, loss, smooth, truncate,
                                               limit, out.notes, length)
            except GuidanceOutOfMemory as e:
                for img in active:  # updates of earlier passes of this step are kept
                    if img in out.losses:
                        out.notes.append(f"image {img + 1}: {e}: refinement cut short")
                    else:
                        out.skipped[img] = str(e)
                break
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
                out.delta[img] -= alpha * (grad if movable is None else grad * movable[img].float())
                done = len(history)
                if refinement and done == refinement.iterations and refinement.extend(value, stop_at[img]):
                    budget[img] += refinement.extra
                if done >= budget[img] or (refinement and refinement.converged(history)):
                    active.remove(img)
    out.z = (base + out.delta).to(z.dtype)
    return out
