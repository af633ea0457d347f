"""The GPU check of issues 10 and 11 (#12), one script for a bare GPU machine (< 8 minutes).

    PYTHONUNBUFFERED=1 python bench/gpu_check.py --out "$OUT"          # on the GPU (bench/gpu_check.sh)
    python bench/gpu_check.py --out /tmp/check --tiny --device cpu      # dry run of the logic on a CPU

Random weights (peaky, ``tsam_ext.runtime.models``) at the real sizes, fp16 weights under fp16
autocast (A1111's CUDA default), every attention on torch's SDPA. Each part runs in its own
try/except, prints its table as soon as it has it and rewrites ``gpu_check.md`` / ``.json`` in --out:
1. SD 1.5 at 512 px: vanilla, disabled, fast preset, reference settings, the reference's
   strategy (``bench.time_variant``), seconds and peak memory; one guided pass against one CFG
   step; then (part ``fp16``) the fp16 gradient against float32's, with and without loss scaling.
2. SDXL at 1024 px, batch 1: one CFG step against one guided pass, plain and checkpointed, peak
   memory of each; then on an emulated 12 GB card (``set_per_process_memory_fraction``): the
   guidance falls back by itself and a guided generation still produces its latent.
"""

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

import bench  # noqa: E402
from tsam_ext.core.guidance import BatchLimit, guidance_step  # noqa: E402
from tsam_ext.core.recorder import Recorder  # noqa: E402
from tsam_ext.core.settings import Settings  # noqa: E402
from tsam_ext.runtime import pipeline  # noqa: E402

GIB = 2 ** 30
CARD_GIB = 12


class Report:
    def __init__(self, out: str, info: dict):
        self.out, self.data, self.text = out, {"machine": info}, [f"# T-SAM GPU check\n\n- {json.dumps(info)}\n"]
        os.makedirs(out, exist_ok=True)

    def add(self, key: str, value, table: str) -> None:
        self.data[key] = value
        self.text.append(table)
        print(table, flush=True)
        with open(os.path.join(self.out, "gpu_check.md"), "w") as f:
            f.write("\n".join(self.text))
        with open(os.path.join(self.out, "gpu_check.json"), "w") as f:
            json.dump(self.data, f, indent=2, default=str)


def part(report: Report, name: str, fn, *args) -> None:
    start = time.perf_counter()
    try:
        fn(report, *args)
    except Exception:  # noqa: BLE001 - the next part still runs
        report.add(f"{name}_error", traceback.format_exc(), f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```\n")
    print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def mib(n) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def sd15(report: Report, cfg: dict) -> None:
    size = cfg["sd15_size"]
    model = bench.load_model(cfg["sd15_channels"], cfg["device"], decoder=True, arch="sd1")
    job = dict(arch="sd1", device=cfg["device"], batch=1, sampler="DPM++ 2M", size=size, steps=cfg["sd15_steps"],
               refine_iterations=20, repeats=cfg["repeats"], threads=torch.get_num_threads())
    rows = {}
    for key in ("vanilla", "disabled", "fast", "reference", "ref_strategy"):
        rows[key] = bench.time_variant(model, dict(job, variant=key))
    summary = bench.summarize(rows)
    report.add("sd15_variants", summary, f"## 1. SD 1.5, {size} px, {job['steps']} steps, fp16\n\n"
               + bench.size_table(size, summary, dict(job, steps=job["steps"])).split("\n", 1)[1])
    grad = bench.gradient_check(model, dict(job, sizes=[size]))
    report.add("sd15_passes", grad, bench.gradient_table(grad))


def fp16_vs_fp32(report: Report, cfg: dict) -> None:
    """d loss / d latent: fp16 weights under fp16 autocast (scaled and unscaled) against float32."""
    device, size = cfg["device"], cfg["sd15_size"]
    model = bench.load_model(cfg["sd15_channels"], device, decoder=False, arch="sd1")
    rows, chunks = pipeline.text_rows(model, [bench.PROMPT], 3.0, "reference")
    z = pipeline.initial_noise([bench.SEED], (4, size // 8, size // 8), device)
    out = {}
    for t_val in (999.0, 500.0):
        t = torch.tensor([t_val], device=device)
        grads = {}
        for name, half, scale in (("fp32", False, None), ("fp16 scaled", True, None), ("fp16 unscaled", True, 1.0)):
            weights = torch.float16 if half and device == "cuda" else torch.float32  # CPU: fp32 weights, fp16 autocast
            for part_ in model.children():
                part_.to(weights)
            cond = model.conditioning(chunks[0], (size, size))
            run = lambda zr, ids: model.apply_model(zr.to(weights), t.expand(len(ids)),  # noqa: E731
                                                    pipeline.map_cond(cond, lambda v: v[ids]))
            limit = BatchLimit() if scale is None else BatchLimit(loss_scale=scale)
            with torch.autocast(device, dtype=torch.float16, enabled=half):
                grads[name] = -guidance_step(z, rows, run, Recorder(model.unet), 1.0, limit=limit).delta
        ref = grads["fp32"]
        out[str(t_val)] = {name: {"finite": bool(torch.isfinite(g).all()), "max_abs": float(g.abs().max()),
                                  "relative_l2": float((g - ref).norm() / ref.norm()),
                                  "cosine": float(torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0))}
                           for name, g in grads.items()}
    weights = "fp16 weights" if device == "cuda" else "fp32 weights (CPU)"
    lines = [f"### fp16 autocast ({weights}) gradient against float32 ({size} px, one pass, alpha 1)", "",
             "| t | run | finite | max abs grad | relative L2 to fp32 | cosine |", "|---|---|---|---:|---:|---:|"]
    for t_val, g in out.items():
        for name, v in g.items():
            lines.append(f"| {t_val} | {name} | {v['finite']} | {v['max_abs']:.3e} | {v['relative_l2']:.3e} "
                         f"| {v['cosine']:.6f} |")
    report.add("fp16_vs_fp32", out, "\n".join(lines) + "\n")


def sdxl(report: Report, cfg: dict) -> None:
    size, device = cfg["sdxl_size"], cfg["device"]
    start = time.perf_counter()
    model = bench.load_model(cfg["sdxl_channels"], device, decoder=False, arch="sdxl")
    print(f"[SDXL built in {time.perf_counter() - start:.0f} s]", flush=True)
    job = dict(arch="sdxl", device=device, sizes=[size], repeats=cfg["repeats"])
    grad = bench.gradient_check(model, job)
    report.add("sdxl_passes", grad, f"## 2. SDXL, {size} px, batch 1, fp16\n\n" + bench.gradient_table(grad))
    small_card(report, model, size, cfg)


def small_card(report: Report, model, size: int, cfg: dict) -> None:
    """A 12 GB card: this process may use 12 GiB of the GPU; the guidance must fit by falling back."""
    device = cfg["device"]
    out = {}
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_GIB * GIB / total))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out["weights_bytes"] = torch.cuda.memory_allocated()
    rows, chunks = pipeline.text_rows(model, [bench.PROMPT], 3.0, "reference")
    cond = model.conditioning(chunks[0], (size, size))
    t = torch.tensor([bench.GUIDANCE_TIMESTEP], device=device)
    run = lambda zr, ids: model.apply_model(zr, t.expand(len(ids)), pipeline.map_cond(cond, lambda v: v[ids]))  # noqa: E731
    z = pipeline.initial_noise([bench.SEED], (4, size // 8, size // 8), device)
    limit = BatchLimit()
    with bench.precision(device):
        step = guidance_step(z, rows, run, Recorder(model.unet), 1.0, limit=limit)
    out["step"] = {"checkpoint": limit.checkpoint, "images": limit.images, "notes": step.notes,
                   "skipped": step.skipped, "moved": bool(step.delta.abs().max() > 0)}
    if device == "cuda":
        out["step"]["peak_bytes"] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    g = bench.generate_variant(model, dict(device=device, batch=1, size=size, sampler="DPM++ 2M", arch="sdxl",
                                           variant="fast"), cfg["sdxl_steps"], Settings(enabled=True, refine=False))
    out["generation"] = {"latent_finite": bool(torch.isfinite(g.latents).all()), "guided_steps": len(g.guided.trace),
                         "warnings": g.guided.warnings}
    if device == "cuda":
        out["generation"]["peak_bytes"] = torch.cuda.max_memory_allocated()
        torch.cuda.set_per_process_memory_fraction(1.0)
    lines = [f"### On an emulated {CARD_GIB} GB card (set_per_process_memory_fraction), {size} px", "",
             "```", json.dumps(out, indent=2, default=str), "```", ""]
    report.add("sdxl_12gb", out, "\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--tiny", action="store_true", help="dry run: 32-channel UNets, 64/128 px, 3 steps")
    p.add_argument("--parts", nargs="+", default=["sd15", "fp16", "sdxl"], choices=("sd15", "fp16", "sdxl"))
    args = p.parse_args(argv)
    cfg = dict(device=args.device, repeats=1 if args.tiny else 3,
               sd15_channels=32 if args.tiny else 320, sd15_size=64 if args.tiny else 512,
               sd15_steps=3 if args.tiny else 25,
               sdxl_channels=32 if args.tiny else 320, sdxl_size=128 if args.tiny else 1024,
               sdxl_steps=3 if args.tiny else 10)
    info = {"torch": torch.__version__, "device": args.device, "config": cfg}
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    report = Report(args.out, info)
    print(json.dumps(info), flush=True)
    for name in args.parts:
        part(report, name, {"sd15": sd15, "fp16": fp16_vs_fp32, "sdxl": sdxl}[name], cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
