"""How a guidance pass fits the device, chosen before the first one runs (``BatchLimit``).

The out-of-memory chain of ``guidance`` learns the same by failing (checkpointing, then halved
groups, then a skipped step); on a GPU each failure costs a partial pass and can fragment the
allocator for the rest of the job. Where the device says how much memory it has free (CUDA),
``fit`` picks instead, from the pass's estimated peak (``memory_estimate``): all images in one
plain pass if that fits, else the largest group that fits plain, else checkpointed, else no
guidance for the pass. Groups come first because they cost no extra compute (the same rows in
more passes); checkpointing runs every transformer block's forward twice. The chain stays as
the safety net for what the estimate does not see (another extension's tensors in the UNet call).
"""

import dataclasses
from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch._subclasses.fake_tensor import FakeTensor

from .checkpointing import checkpointed
from .guidance import BatchLimit, ChunkTarget, RowTarget, frozen, pass_gradient
from .memory_estimate import fake_copy, fake_mode, traced_peak
from .recorder import Recorder

# Headroom over the estimate for what it does not count: cuDNN workspaces, the caching
# allocator's rounding and fragmentation.
MARGIN = 1.15
GIB = 2 ** 30


def free_bytes(device: torch.device) -> int | None:
    """Memory a pass can use on ``device``: CUDA's free memory plus what torch's caching allocator
    holds unused; None where the device does not say (CPU, MPS)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def pass_peak(unet: torch.nn.Module, make_recorder: Callable[[torch.nn.Module], Recorder],
              run_twin: Callable[[torch.nn.Module, torch.Tensor, list[int]], object], z: torch.Tensor,
              rows: Sequence[RowTarget], *, checkpoint: bool, loss: str = "reference", smooth: bool = True,
              truncate: bool = True, length: str = "normalised") -> int:
    """Peak bytes one guidance pass over all images of ``z`` [B, C, h, w] allocates (on top of
    the weights and what the host holds), traced on ``unet``'s fake copy. ``run_twin(twin, z_rows,
    row_ids)`` is the host's UNet call made on the copy ``twin``; ``make_recorder(twin)`` its
    recorder, as the host builds it (its attention kernels decide the memory)."""
    mode = fake_mode(unet)
    with mode:
        twin = fake_copy(unet, mode)
        recorder = make_recorder(twin)
        fake_z = z if isinstance(z, FakeTensor) else mode.from_tensor(z)
        images = sorted({r.image for r in rows if r.guided(loss)})
        with frozen(twin), torch.enable_grad(), checkpointed(twin) if checkpoint else nullcontext():
            return traced_peak(lambda: pass_gradient(fake_z, images, rows, lambda zr, ids: run_twin(twin, zr, ids),
                                                     recorder, loss, smooth, truncate, length=length))


def bare_unet_call(text) -> Callable[[torch.nn.Module, torch.Tensor, list[int]], torch.Tensor]:
    """``run(unet, z_rows, row_ids)``: the UNet called as ldm's, sgm's and Forge's are,
    ``unet(x, timesteps, context=crossattn, y=vector)``, every row with the first row's ``text``
    (a tensor [R, S, D] or SDXL's dict of ``crossattn`` [R, S, D] and ``vector`` [R, V]) at
    timestep 0. An inpainting UNet's extra input channels are zeros."""
    crossattn = text["crossattn"] if isinstance(text, dict) else text
    vector = text.get("vector") if isinstance(text, dict) else None

    def run(unet, z, ids):
        n, kwargs = len(ids), {}
        if vector is not None:
            kwargs["y"] = vector[:1].expand(n, *vector.shape[1:])
        extra = getattr(unet, "in_channels", z.shape[1]) - z.shape[1]
        x = torch.cat([z, z.new_zeros(n, extra, *z.shape[2:])], dim=1) if extra > 0 else z
        return unet(x, z.new_zeros(n), context=crossattn[:1].expand(n, *crossattn.shape[1:]), **kwargs)
    return run


def unet_estimate(recorder: Recorder, text, *, loss: str = "reference", smooth: bool = True, truncate: bool = True,
                  length: str = "normalised") -> Callable[[torch.Tensor, list[RowTarget], bool], int]:
    """``GuidedPass.estimate`` for the UNet of ``recorder`` (``bare_unet_call`` with ``text``):
    memory depends on shapes only, not on the prompt or the timestep. What a host adds to its
    UNet call (ControlNet's residuals and model) is not in it."""
    run = bare_unet_call(text)

    def estimate(z: torch.Tensor, rows: list[RowTarget], checkpoint: bool) -> int:
        return pass_peak(recorder.unet, lambda twin: Recorder(twin, recorder.level, recorder.contexts, recorder.fusable),
                         run, z, rows, checkpoint=checkpoint, loss=loss, smooth=smooth, truncate=truncate,
                         length=length)
    return estimate


def image_rows(rows: Sequence[RowTarget], images: int) -> list[RowTarget]:
    """The rows of the first ``images`` images, renumbered from 0: the pass over a group of that
    many images, the largest rows first (a group's peak is its images' rows)."""
    per_image = sorted({r.image for r in rows}, key=lambda i: -sum(r.image == i for r in rows))[:images]
    return [dataclasses.replace(r, image=per_image.index(r.image)) for r in rows if r.image in per_image]


def fit(peak: Callable[[int, bool], int], images: int, free: int, limit: BatchLimit) -> tuple[BatchLimit, str | None]:
    """The limit for passes of ``images`` images given ``free`` bytes; ``peak(k, checkpoint)``
    is the estimated peak of a pass over k of them. The user's own choices (checkpointing on, a
    maximum per pass) bound it. Returns (limit, what changed, for the console; None: nothing)."""
    cap = min(images, limit.images or images)
    groups = sorted({max(1, cap // 2 ** i) for i in range(cap.bit_length())}, reverse=True)
    for checkpoint in ((True,) if limit.checkpoint else (False, True)):
        for k in groups:
            if peak(k, checkpoint) * MARGIN <= free:
                chosen = dataclasses.replace(limit, images=None if k >= images else k, checkpoint=checkpoint)
                if chosen == limit:
                    return limit, None
                how = (f"{k} image(s) per pass" if k < cap else "") + (
                    " with activation checkpointing" if checkpoint and not limit.checkpoint else "")
                return chosen, (f"a guidance pass needs about {peak(k, checkpoint) / GIB:.1f} GiB, "
                                f"{free / GIB:.1f} GiB free: it runs {how.strip()}")
    need = peak(1, True)
    raise PassTooLarge(f"a guidance pass needs about {need / GIB:.1f} GiB even checkpointed with one image, "
                       f"{free / GIB:.1f} GiB free")


class PassTooLarge(RuntimeError):
    """No pass fits the free memory by the estimate."""


def synthetic_rows(images: int, rows_per_image: int = 1, tokens: int = 7) -> list[RowTarget]:
    """Rows for an estimate where the prompts are not known yet: the loss's own tensors are
    [rows, gh, gw, 77]-sized, a rounding error against the UNet's, whatever the prompt."""
    chunk = ChunkTarget(torch.eye(tokens), 0)
    return [RowTarget(i, (chunk,)) for i in range(images) for _ in range(rows_per_image)]
