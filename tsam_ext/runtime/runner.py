"""``python -m tsam_ext``: the same seed with and without T-SAM, side by side, with what T-SAM saw.

Runs Stable Diffusion (``--arch``: 1.x, 2.x 512-base, 2.x 768-v, SDXL) on its real architectures
(ldm's UNet and VAE decoder, transformers' CLIP and open_clip's text towers, the real tokenizer)
through k-diffusion's samplers. Give ``--ckpt`` a checkpoint of that family for real pictures;
without one the weights are random: the pictures are noise, but the mechanics are real.
"""

import argparse
import os
import time

import torch
from tqdm.auto import tqdm

from ..core import diagnostics
from ..core.settings import BY_NAME, Settings
from . import models
from .model import use_sdpa
from .pipeline import SAMPLERS, generate

RANDOM_CHANNELS = 128  # UNet width on random weights: about 2 minutes for both generations on 2 CPU cores
RANDOM_SIZE = 256


def _help(text: str) -> str:
    """A help text as argparse wants it (it %-formats help strings)."""
    return text.replace("%", "%%")


def parse_args(argv=None) -> argparse.Namespace:
    f = BY_NAME
    ap = argparse.ArgumentParser(prog="python -m tsam_ext", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--arch", default="sd1", choices=models.ARCHES,
                    help="model family: SD 1.x, SD 2.x 512-base (eps), SD 2.x 768-v (v-prediction), SDXL base")
    ap.add_argument("--ckpt", help="checkpoint of that family, .safetensors/.ckpt in A1111's layout (default: random weights)")
    ap.add_argument("--prompt", default="a black car and a white clock")
    ap.add_argument("--negative", default="")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", type=int, help=f"image side in px (default: the family's own with --ckpt, SD 1.x / 2.x "
                                             f"512, 768-v 768, SDXL 1024; {RANDOM_SIZE} on random weights)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--sampler", default="DPM++ 2M", choices=sorted(SAMPLERS))
    ap.add_argument("--gamma", type=float, default=f["gamma"].default, help=_help(f["gamma"].help))
    ap.add_argument("--alpha", type=float, default=f["alpha"].default, help=_help(f["alpha"].help))
    ap.add_argument("--guided-steps", type=int, default=f["guided_steps"].default, help=_help(f["guided_steps"].help))
    ap.add_argument("--no-refine", action="store_true", help="skip the iterative refinement (faster)")
    ap.add_argument("--refine-iterations", type=int, default=f["refine_iterations"].default)
    ap.add_argument("--early-stop", action="store_true",
                    help="stop refining an image once its loss settles (faster; off makes the reference's updates)")
    ap.add_argument("--loss", default="reference", choices=f["loss"].choices, help=_help(f["loss"].help))
    ap.add_argument("--gamma-order", default="reference", choices=f["gamma_order"].choices)
    ap.add_argument("--no-smoothing", action="store_true")
    ap.add_argument("--text-encoder", default=f["text_encoder"].default, choices=f["text_encoder"].choices,
                    help=_help(f["text_encoder"].help))
    ap.add_argument("--length-scaling", default=f["length_scaling"].default, choices=f["length_scaling"].choices,
                    help=_help(f["length_scaling"].help))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--half", action="store_true", help="fp16 weights and autocast (CUDA)")
    ap.add_argument("--out", default="tsam_compare.png")
    ap.add_argument("--model-channels", type=int, default=RANDOM_CHANNELS,
                    help="UNet width on random weights, ignored with --ckpt (320 is the real width; the default runs "
                         "both generations of SD 1.x in about 2 minutes on 2 CPU cores)")
    ap.add_argument("--text-head-dim", type=int,
                    help="channels per head of the text towers on random weights, ignored with --ckpt (64 is the real "
                         "size; smaller keeps every layer and head, for SDXL's 0.8e9-parameter towers on a small machine)")
    return ap.parse_args(argv)


def settings_from(args) -> Settings:
    return Settings(enabled=True).updated(gamma=args.gamma, alpha=args.alpha, guided_steps=args.guided_steps,
                                          refine=not args.no_refine, refine_iterations=args.refine_iterations,
                                          early_stop=args.early_stop,
                                          loss=args.loss, gamma_order=args.gamma_order, smoothing=not args.no_smoothing,
                                          text_encoder=args.text_encoder, length_scaling=args.length_scaling)


def load_model(args):
    if args.ckpt:
        model = models.load_checkpoint(args.arch, args.ckpt)
    else:
        model = models.build(args.arch, model_channels=args.model_channels, text_head_dim=args.text_head_dim)
    model = use_sdpa(model).to(args.device)
    return model.half() if args.half else model


def image_size(args) -> int:
    return args.size or (models.DEFAULT_SIZE[args.arch] if args.ckpt else RANDOM_SIZE)


def run(model, args, settings):
    """Both generations with the same seed: ((image, seconds) without, (image, seconds, Generation) with)."""
    size = image_size(args)
    common = dict(negative=args.negative, steps=args.steps, cfg_scale=args.cfg, width=size, height=size,
                  sampler=args.sampler, progress=True)
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=args.half and args.device.startswith("cuda"))
    with autocast:
        tqdm.write("without T-SAM:")
        start = time.perf_counter()
        plain = generate(model, [args.prompt], [args.seed], None, **common)
        mid = time.perf_counter()
        tqdm.write("with T-SAM:")
        guided = generate(model, [args.prompt], [args.seed], settings, keep_maps=True, log=tqdm.write, **common)
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
    if args.ckpt:
        print(f"T-SAM: {args.arch} from {args.ckpt}")
    else:
        print(f"T-SAM: {args.arch} with random weights (no --ckpt), UNet {args.model_channels} channels: "
              "the pictures are noise; the mechanics are real.")
    torch.manual_seed(0)
    model = load_model(args)
    plain, guided = run(model, args, settings)
    compose(args, settings, plain, guided).save(args.out)
    summary = guided[2].guided.loss_summary().get(0)
    trace = f"loss {summary[0]:.4f} -> {summary[1]:.4f}, " if summary else ""
    print(f"T-SAM: {trace}{guided[1] / plain[1]:.2f}x the time of the plain generation; wrote {os.path.abspath(args.out)}")
    return 0
