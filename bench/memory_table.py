"""The guidance pass's memory: the estimate (``tsam_ext.core.memory_plan.pass_peak``) against
the peak the CPU allocator measured, then projected to the sizes users run.

    python bench/memory_table.py validate [--model-channels 64 128 320]
    python bench/memory_table.py project  [--families sd1 sd2 sdxl] [--batches 1 2 3 4]

``validate`` runs the real pass (random weights, float32, this CPU) under torch.profiler's
allocator events and prints the estimate's error. ``project`` traces the real-size UNets in
float16 on fake tensors (nothing is computed, nothing allocated): the pass's peak on top of the
weights, the UNet's own weights, and the cards (8/12/16/24 GB) where both fit with the margin
T-SAM plans with. Projected figures, not measured on a GPU. Markdown on stdout.
"""

import argparse
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from tsam_ext.core.guidance import frozen, pass_gradient  # noqa: E402
from tsam_ext.core.memory_estimate import fake_mode  # noqa: E402
from tsam_ext.core.memory_plan import GIB, MARGIN, bare_unet_call, synthetic_rows, unet_estimate  # noqa: E402
from tsam_ext.core.checkpointing import checkpointed  # noqa: E402
from tsam_ext.core.recorder import Recorder  # noqa: E402
from tsam_ext.runtime import models  # noqa: E402
from tsam_ext.runtime.model import sdpa_unet, use_sdpa  # noqa: E402

CARDS = (8, 12, 16, 24)
SIZES = {"sd1": [(512, 512), (768, 768)], "sd2": [(768, 768)], "sdxl": [(1024, 1024), (832, 1216)]}
CONTEXT = {"sd1": 768, "sd2": 1024, "sdxl": 2048}


def text_of(family: str, rows: int, dtype=torch.float32):
    """Zero text conditioning of the family's shape (memory depends on shapes only)."""
    crossattn = torch.zeros(rows, 77, CONTEXT[family], dtype=dtype)
    return {"crossattn": crossattn, "vector": torch.zeros(rows, 2816, dtype=dtype)} if family == "sdxl" else crossattn


def measured_peak(run) -> int:
    """Peak bytes the CPU allocator held during ``run()`` above what it held before (torch.profiler's
    allocator events, in time order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def real_pass(unet, text, z, rows, checkpoint: bool) -> None:
    """The guidance pass itself, computed."""
    run = bare_unet_call(text)
    with frozen(unet), torch.enable_grad(), checkpointed(unet) if checkpoint else contextlib.nullcontext():
        pass_gradient(z, sorted({r.image for r in rows}), rows, lambda zr, ids: run(unet, zr, ids), Recorder(unet),
                      "reference", True, True)


def validate(channels: list[int], family: str = "sd1") -> list[tuple]:
    """(channels, latent side, images, checkpointed, measured, estimated) on this CPU, float32."""
    out = []
    for ch in channels:
        model = use_sdpa(models.build(family, model_channels=ch, decoder=False))
        for side, images in ((32, 1), (32, 2), (48, 1)):
            z = torch.randn(images, 4, side, side)
            rows = synthetic_rows(images)
            for checkpoint in (False, True):
                text = text_of(family, images)
                real = measured_peak(lambda: real_pass(model.unet, text, z, rows, checkpoint))
                est = unet_estimate(Recorder(model.unet), text)(z, rows, checkpoint)
                out.append((ch, side, images, checkpoint, real, est))
    return out


def fake_unet(family: str):
    """The family's real-size UNet on fake tensors, float16 as A1111 runs it (ldm's ``dtype``
    float16, under autocast), its attention on torch's SDPA (A1111's "sdp")."""
    mode, default = fake_mode(), torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # built in float16: .half() cannot swap fake parameters
    try:
        with mode:
            unet = models.unet(family)
    finally:
        torch.set_default_dtype(default)
    unet.dtype = torch.float16
    return sdpa_unet(unet), mode


def project(families: list[str], batches: list[int]) -> list[tuple]:
    """(family, (h, w), images, checkpointed, pass peak, UNet weight bytes) at float16."""
    out = []
    for family in families:
        unet, mode = fake_unet(family)
        weights = sum(p.nelement() * p.element_size() for p in unet.parameters())
        for h, w in SIZES[family]:
            for images in batches:
                with mode:
                    z = torch.zeros(images, 4, h // 8, w // 8, dtype=torch.float16)
                for checkpoint in (False, True):
                    with torch.autocast("cpu", dtype=torch.float16):
                        peak = unet_estimate(Recorder(unet), text_of(family, images, torch.float16))(
                            z, synthetic_rows(images), checkpoint)
                    out.append((family, (h, w), images, checkpoint, peak, weights))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["validate", "project"])
    parser.add_argument("--model-channels", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--families", nargs="+", default=["sd1", "sd2", "sdxl"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args(argv)
    mib = 2 ** 20
    if args.what == "validate":
        print("| UNet channels | latent | images | pass | measured (MiB) | estimate (MiB) | error |")
        print("|---|---|---|---|---|---|---|")
        for ch, side, images, ckpt, real, est in validate(args.model_channels):
            print(f"| {ch} | {side}x{side} | {images} | {'checkpointed' if ckpt else 'plain'} | {real / mib:.1f} "
                  f"| {est / mib:.1f} | {100 * (est - real) / real:+.1f}% |")
    else:
        print("| family | size | images | pass | pass peak (GiB) | + UNet fp16 (GiB) | fits (GB cards) |")
        print("|---|---|---|---|---|---|---|")
        for family, (h, w), images, ckpt, peak, weights in project(args.families, args.batches):
            need = weights + peak * MARGIN
            fits = ", ".join(str(c) for c in CARDS if need <= c * 1e9) or "none"
            print(f"| {family} | {w}x{h} | {images} | {'checkpointed' if ckpt else 'plain'} | {peak / GIB:.2f} "
                  f"| {need / GIB:.2f} | {fits} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
