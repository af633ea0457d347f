"""``python -m tsam_ext``: the same seed with and without T-SAM, side by side, with what T-SAM saw.

Runs Stable Diffusion 1.x on its real architectures (ldm's UNet and VAE decoder, transformers'
CLIP text encoder with the real tokenizer) through k-diffusion's samplers. Give ``--ckpt`` an
SD1.x checkpoint for real pictures; without one the weights are random: the pictures are noise,
but the mechanics and the timings are real.
"""

import argparse
import os
import time

import torch

from ..core import diagnostics
from ..core.settings import BY_NAME, Settings
from . import sd1
from .pipeline import SAMPLERS, generate


def parse_args(argv=None) -> argparse.Namespace:
    f = BY_NAME
    ap = argparse.ArgumentParser(prog="python -m tsam_ext", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--prompt", default="a black car and a white clock")
    ap.add_argument("--negative", default="")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ckpt", help="SD1.x .safetensors/.ckpt (default: random weights)")
    ap.add_argument("--size", type=int, help="image side in px (default: 512 with --ckpt, 256 on random weights)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--sampler", default="DPM++ 2M", choices=sorted(SAMPLERS))
    ap.add_argument("--gamma", type=float, default=f["gamma"].default, help=f["gamma"].help)
    ap.add_argument("--alpha", type=float, default=f["alpha"].default, help=f["alpha"].help)
    ap.add_argument("--guided-steps", type=int, default=f["guided_steps"].default, help=f["guided_steps"].help)
    ap.add_argument("--no-refine", action="store_true", help="skip the iterative refinement (faster)")
    ap.add_argument("--refine-iterations", type=int, default=f["refine_iterations"].default)
    ap.add_argument("--early-stop", action="store_true",
                    help="stop refining an image once its loss settles (faster; off makes the reference's updates)")
    ap.add_argument("--loss", default="reference", choices=f["loss"].choices, help=f["loss"].help)
    ap.add_argument("--gamma-order", default="reference", choices=f["gamma_order"].choices)
    ap.add_argument("--no-smoothing", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--half", action="store_true", help="fp16 weights and autocast (CUDA)")
    ap.add_argument("--out", default="tsam_compare.png")
    ap.add_argument("--model-channels", type=int, default=320,
                    help="UNet width for random weights (SD1.5: 320; smaller runs the same mechanics faster)")
    return ap.parse_args(argv)


def settings_from(args) -> Settings:
    return Settings(enabled=True).updated(gamma=args.gamma, alpha=args.alpha, guided_steps=args.guided_steps,
                                          refine=not args.no_refine, refine_iterations=args.refine_iterations,
                                          early_stop=args.early_stop,
                                          loss=args.loss, gamma_order=args.gamma_order, smoothing=not args.no_smoothing)


def load_model(args) -> sd1.SD1:
    model = sd1.load_checkpoint(args.ckpt) if args.ckpt else sd1.build(model_channels=args.model_channels)
    model = sd1.use_sdpa(model).to(args.device)
    return model.half() if args.half else model


def run(model, args, settings):
    """Both generations with the same seed: ((image, seconds) without, (image, seconds, Generation) with)."""
    size = args.size or (512 if args.ckpt else 256)
    common = dict(negative=args.negative, steps=args.steps, cfg_scale=args.cfg, width=size, height=size, sampler=args.sampler)
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=args.half and args.device.startswith("cuda"))
    with autocast:
        start = time.perf_counter()
        plain = generate(model, [args.prompt], [args.seed], None, **common)
        mid = time.perf_counter()
        guided = generate(model, [args.prompt], [args.seed], settings, keep_maps=True, **common)
        end = time.perf_counter()
    return (plain.images[0], mid - start), (guided.images[0], end - mid, guided)


def compose(args, settings, plain, guided):
    """The comparison picture: both images, then what T-SAM saw for the guided one."""
    (img0, t0), (img1, t1, gen) = plain, guided
    header = diagnostics.stack([diagnostics.captioned(diagnostics.to_pil(img0), f"without T-SAM ({t0:.1f} s)"),
                                diagnostics.captioned(diagnostics.to_pil(img1), f"with T-SAM ({t1:.1f} s)")], horizontal=True)
    body = diagnostics.image_figure(diagnostics.to_pil(img1), gen.guided.trace, image=0, smooth=settings.smoothing)
    return diagnostics.stack([header, body]) if body is not None else header


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    if not args.ckpt:
        print("T-SAM: random weights (no --ckpt): the pictures are noise; the mechanics and timings are real.")
    torch.manual_seed(0)
    model = load_model(args)
    plain, guided = run(model, args, settings)
    compose(args, settings, plain, guided).save(args.out)
    summary = guided[2].guided.loss_summary().get(0)
    trace = f"loss {summary[0]:.4f} -> {summary[1]:.4f}, " if summary else ""
    print(f"T-SAM: {trace}{guided[1] / plain[1]:.2f}x the time of the plain generation; wrote {os.path.abspath(args.out)}")
    return 0
