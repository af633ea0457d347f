"""||delta z|| per guided step against prompt length, with the reference and the normalised length scaling.

    python bench/length_table.py [--arches sd1 sd2 sdxl] [--seeds 3] [--size 64] [--steps 4]
                                 [--model-channels 32] [--text-head-dim 16] [--threads N]

Each family's real layout with random peaky weights (``tsam_ext.runtime.models.build``, shrunk
for a CPU), through the standalone pipeline: Euler, ``--steps`` sampler steps, the default
settings except refinement off, so each guided step is one update and ||delta z|| (the change of
the UNet-input latent z by that step) is alpha times the gradient's norm. Prompts of 3..75 tokens
(one chunk) and 150 / 225 tokens (2 / 3 full chunks), each the first tokens of one tag list, so
every length has the same kind of words. Prints markdown: per family and rule, the median
over seeds of the mean over guided steps of ||delta z||, and its ratio to the 7-token prompt's.
"""

import argparse
import os
import platform
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

from tsam_ext.core.controller import GuidedPass  # noqa: E402
from tsam_ext.core.length import SCALINGS  # noqa: E402
from tsam_ext.core.settings import Settings  # noqa: E402
from tsam_ext.runtime import models, pipeline  # noqa: E402
from tsam_ext.runtime.model import use_sdpa  # noqa: E402

TAGS = ("masterpiece, best quality, 1girl, solo, long hair, red eyes, black dress, white gloves, holding a sword, "
        "standing in a field of flowers, blue sky, white clouds, sunlight, wind, looking at viewer, smile, "
        "a small dog beside her, a wooden house in the distance, mountains, river, trees, birds, detailed "
        "background, soft lighting, depth of field, a red car parked on the road, a green bicycle, a yellow "
        "umbrella, autumn leaves, a stone bridge, a lantern, evening, warm colors, film grain")
LENGTHS = (3, 7, 15, 30, 50, 75, 150, 225)  # tokens; 150 and 225 are 2 and 3 full chunks
CHUNK_TOKENS = 75


def prompt_of(tokenizer, n: int) -> str:
    """A prompt of exactly n tokens: the first n of the tag list (repeated as needed)."""
    ids = tokenizer(TAGS, add_special_tokens=False)["input_ids"]
    ids = (ids * (n // len(ids) + 1))[:n]
    text = tokenizer.decode(ids)
    got = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert got == n, f"{n} tokens cut from the tags re-tokenize to {got}"
    return text


class DeltaPass(GuidedPass):
    """A GuidedPass that keeps ||delta z|| of image 0 at every guided step."""

    def guide(self, *args, **kwargs):
        out = super().guide(*args, **kwargs)
        if out is not None:
            self.deltas = getattr(self, "deltas", []) + [float(out.delta[0].norm())]
        return out


def measure(model, prompt: str, seed: int, args, scaling: str) -> float:
    settings = Settings(enabled=True, refine=False, length_scaling=scaling)
    gen = pipeline.generate(model, [prompt], [seed], settings, steps=args.steps, width=args.size, height=args.size,
                            sampler="Euler", decode=False, make_pass=DeltaPass, log=lambda _: None)
    return statistics.mean(gen.guided.deltas)


def table(arch: str, args) -> str:
    torch.manual_seed(0)
    model = use_sdpa(models.build(arch, model_channels=args.model_channels, decoder=False, seed=0,
                                  text_head_dim=args.text_head_dim if arch == "sdxl" else None))
    rows = {}
    for n in LENGTHS:
        prompt = prompt_of(model.tokenizer, n)
        rows[n] = {s: statistics.median(measure(model, prompt, seed, args, s) for seed in range(1, args.seeds + 1))
                   for s in SCALINGS}
        print(f"{arch} {n} tokens: " + ", ".join(f"{s} {v:.4g}" for s, v in rows[n].items()), file=sys.stderr)
    lines = [f"**{arch}**", "", "| tokens | chunks | reference ||dz|| | ratio | normalised ||dz|| | ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, v in rows.items():
        ref, norm = v["reference"], v["normalised"]
        lines.append(f"| {n} | {-(-n // CHUNK_TOKENS)} | {ref:.4g} | {ref / rows[7]['reference']:.2f} | "
                     f"{norm:.4g} | {norm / rows[7]['normalised']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arches", nargs="+", default=["sd1", "sd2", "sdxl"], choices=models.ARCHES)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="sampler steps; the default 60%% guides the first 2")
    ap.add_argument("--model-channels", type=int, default=32)
    ap.add_argument("--text-head-dim", type=int, default=16, help="SDXL's text towers only")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; {args.size} px, Euler {args.steps} steps, refinement off, alpha "
          f"{Settings().alpha:g}, UNet {args.model_channels} channels, median of {args.seeds} seeds\n")
    for arch in args.arches:
        print(table(arch, args) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
