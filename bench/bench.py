"""T-SAM's cost as ratios against vanilla generation measured in the same run.

    python bench/bench.py [--arch sd1|sd2|sd2-v|sdxl] [--sizes 256 512] [--steps 50] [--sampler "DPM++ 2M"]
                          [--batch 1] [--repeats 1] [--device cpu|cuda] [--model-channels 320]
                          [--refine-iterations 20] [--threads N] [--json PATH] [--quick]
    python bench/bench.py --webui URL ...      (through a running WebUI: webui_bench.py)

The family's real-size UNet, text encoders and VAE decoder with random weights
(``tsam_ext.runtime.models.build``; ``--model-channels`` shrinks the UNet for a CPU), every
UNet attention on torch's fused SDPA (A1111's "sdp"). Each variant of each size runs alone
in a fresh subprocess of this script: build, one short warm-up generation of the same variant,
then ``--repeats`` timed generations (median reported) with the peak memory since the warm-up.
Prints markdown to stdout; progress and worker failures go to stderr.
"""

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

import webui_bench  # noqa: E402
from reference_strategy import ReferenceStrategyPass  # noqa: E402
from tsam_ext.runtime import models, pipeline  # noqa: E402
from tsam_ext.runtime.model import Diffusion, use_sdpa  # noqa: E402
from tsam_ext.core.controller import GuidedPass  # noqa: E402
from tsam_ext.core.guidance import BatchLimit, guidance_step  # noqa: E402
from tsam_ext.core.recorder import Recorder  # noqa: E402
from tsam_ext.core.schedule import Refinement  # noqa: E402
from tsam_ext.core.settings import Settings  # noqa: E402

PROMPT = "a black car and a white clock"  # 7 tokens: every reference-loss row has a gradient
SEED = 1234
WARMUP_STEPS = 2            # the warm-up: same variant, 2 sampler steps, 1 refinement iteration
GUIDANCE_TIMESTEP = 999.0   # the gradient check's t: the first (noisiest) guided step
GRADIENT_TOLERANCE = 1e-4   # relative; truncation must not change the gradient at all
DISABLED_TOLERANCE = 0.02   # "1.00x" within timing noise

FULL = dict(sizes=[256, 512], steps=50, model_channels=320, refine_iterations=20, repeats=1)
QUICK = dict(sizes=[64], steps=3, model_channels=32, refine_iterations=2, repeats=1)
WEBUI = dict(FULL, sizes=[512], steps=10)  # A1111's CPU users' case; the model is the server's

# key -> (label, Settings fields, generate() keywords). Settings fields get refine_iterations.
VARIANTS = {
    "vanilla": ("vanilla (no T-SAM)", None, {}),
    "disabled": ("T-SAM disabled (Settings(enabled=False))", dict(enabled=False), {}),
    "reference": ("T-SAM, reference settings", dict(enabled=True), {}),
    "fast": ("T-SAM, fast preset (refine off)", dict(enabled=True, refine=False), {}),
    "ref_strategy": ("reference implementation's strategy", dict(enabled=True),
                     dict(truncate=False, make_pass=ReferenceStrategyPass)),
}
TSAM_VARIANTS = ("reference", "fast")


def checkpointed_pass(*args, **kwargs) -> GuidedPass:
    """``make_pass`` whose guidance passes run checkpointed from the start (the Settings option)."""
    return GuidedPass(*args, limit=BatchLimit(checkpoint=True), **kwargs)


SDXL_VARIANTS = {"checkpointed": ("T-SAM, fast preset, checkpointed pass forced", dict(enabled=True, refine=False),
                                  dict(make_pass=checkpointed_pass))}


def variants(arch: str) -> dict:
    """The rows of a run: every family's, and for SDXL the checkpointed pass (its 12 GB fallback)."""
    return dict(VARIANTS, **SDXL_VARIANTS) if arch == "sdxl" else VARIANTS


# ---- worker side: one variant (or the gradient check) in a fresh process -----------------------

def load_model(channels: int, device: str, decoder: bool = True, arch: str = "sd1") -> Diffusion:
    """The benchmark model on ``device``: fp16 weights on CUDA (A1111's default, under autocast).
    Without ``decoder`` generations end at the latent (the gradient check; the tests, where
    decoding, which costs every row alike, would be most of each tiny run)."""
    model = use_sdpa(models.build(arch, model_channels=channels, decoder=decoder, seed=0)).to(device)
    if device == "cuda":
        for part in model.children():
            part.half()  # alphas_cumprod, the model's own buffer, stays float32: the sigmas come from it
    return model


def precision(device: str):
    return torch.autocast("cuda", dtype=torch.float16) if device == "cuda" else contextlib.nullcontext()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def settings_for(key: str, refine_iterations: int, arch: str = "sd1") -> Settings | None:
    fields = variants(arch)[key][1]
    return None if fields is None else Settings().updated(refine_iterations=refine_iterations, **fields)


def memory_method(device: str) -> str:
    """How peak memory is read: CUDA's allocator peak, or the peak RSS (VmHWM), which Linux resets
    through /proc/self/clear_refs; where it cannot, ru_maxrss (peak since the process started)."""
    if device == "cuda":
        return "torch.cuda.max_memory_allocated since warm-up"
    try:
        reset_peak_rss()
        return "peak RSS since warm-up (VmHWM)"
    except OSError:
        return "peak RSS of the whole process, build included (ru_maxrss)"


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


class PeakMemory:
    """Peak memory in bytes from ``reset()`` on, as ``memory_method`` says."""

    def __init__(self, device: str):
        self.device, self.method = device, memory_method(device)

    def reset(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif "VmHWM" in self.method:
            reset_peak_rss()

    def read(self) -> int:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        if "VmHWM" in self.method:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class GuidedPassCounter:
    """Counts, while in scope, the UNet calls made with autograd on: guidance's passes, whatever
    the strategy (the sampler's own calls run under no_grad)."""

    def __init__(self, unet: torch.nn.Module):
        self.unet, self.count = unet, 0

    def __enter__(self):
        self.handle = self.unet.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def _hook(self, module, args):
        self.count += torch.is_grad_enabled()


def generate_variant(model: Diffusion, job: dict, steps: int, settings: Settings | None,
                     refinement: Refinement = Refinement()) -> pipeline.Generation:
    """One generation of the job's variant; fails if guidance gave up part-way (its time would lie)."""
    n = job["batch"]
    with precision(job["device"]):
        g = pipeline.generate(model, [PROMPT] * n, [SEED + i for i in range(n)], settings, steps=steps,
                              width=job["size"], height=job["size"], sampler=job["sampler"],
                              refinement=refinement, log=lambda _msg: None, **variants(job["arch"])[job["variant"]][2])
    if g.guided is not None and (g.guided.stopped or not g.guided.trace):
        raise RuntimeError(f"guidance did not run through: {g.guided.stopped or 'no guided step'}")
    return g


def time_variant(model: Diffusion, job: dict) -> dict:
    """Warm up, then time ``repeats`` generations; seconds per run, peak bytes, guided passes per run."""
    device = job["device"]
    settings = settings_for(job["variant"], job["refine_iterations"], job["arch"])
    warmup = None if settings is None else settings.updated(refine_iterations=1)
    generate_variant(model, job, WARMUP_STEPS, warmup, Refinement(extra=0))
    memory = PeakMemory(device)
    synchronize(device)
    memory.reset()
    seconds, passes = [], []
    for _ in range(job["repeats"]):
        with GuidedPassCounter(model.unet) as counter:
            synchronize(device)
            start = time.perf_counter()
            generate_variant(model, job, job["steps"], settings)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
        passes.append(counter.count)
    return {"seconds": seconds, "peak_bytes": memory.read(), "guided_passes": passes}


def gradient_check(model: Diffusion, job: dict) -> dict:
    """Per size: grad of the T-SAM loss w.r.t. the latent through the truncated and the full UNet
    pass, and what one guided pass costs against one CFG step (``pass_cost``)."""
    device, settings = job["device"], Settings(enabled=True)
    rows, chunks = pipeline.text_rows(model, [PROMPT], settings.gamma, settings.gamma_order)
    t = torch.tensor([GUIDANCE_TIMESTEP], device=device)
    out = {}
    for size in job["sizes"]:
        cond = model.conditioning(chunks[0], (size, size))
        run_unet = lambda z_rows, ids: model.apply_model(z_rows, t.expand(len(ids)),  # noqa: E731
                                                         pipeline.map_cond(cond, lambda v: v[ids]))
        z = pipeline.initial_noise([SEED], (4, size // 8, size // 8), device)
        grads, losses = {}, {}
        for truncate in (True, False):
            with precision(device):
                step = guidance_step(z, rows, run_unet, Recorder(model.unet), 1.0, loss=settings.loss,
                                     smooth=settings.smoothing, truncate=truncate)
            grads[truncate], losses[truncate] = -step.delta, step.losses[0][0]  # alpha 1: delta = -grad
        diff = float((grads[True] - grads[False]).abs().max())
        scale = float(grads[False].abs().max())
        out[str(size)] = {"loss_truncated": losses[True], "loss_full": losses[False], "max_abs_diff": diff,
                          "max_abs_grad": scale, "relative_diff": diff / scale if scale > 0 else math.inf,
                          "pass_cost": pass_cost(model, job, z, rows, cond, run_unet)}
    return out


def pass_cost(model: Diffusion, job: dict, z: torch.Tensor, rows, cond, run_unet) -> dict:
    """Seconds (median of ``repeats`` after one warm-up) and peak memory of one CFG step (the
    batch-2 forward of cond and uncond, no autograd) and of one guided pass (truncated forward +
    backward of the one image), plain and checkpointed."""
    device, memory = job["device"], PeakMemory(job["device"])
    t2 = torch.tensor([GUIDANCE_TIMESTEP] * 2, device=device)
    both = pipeline.map_cond(cond, lambda v: torch.cat([v, v]))

    def cfg_step():
        with torch.no_grad():
            model.apply_model(torch.cat([z, z]).to(model.dtype), t2, both)

    def guided(checkpoint):
        return lambda: guidance_step(z, rows, run_unet, Recorder(model.unet), 1.0, limit=BatchLimit(checkpoint=checkpoint))

    out = {}
    for name, fn in (("cfg_step", cfg_step), ("guided_pass", guided(False)), ("guided_pass_checkpointed", guided(True))):
        with precision(device):
            fn()
            seconds = []
            synchronize(device)
            memory.reset()
            for _ in range(job["repeats"]):
                start = time.perf_counter()
                fn()
                synchronize(device)
                seconds.append(time.perf_counter() - start)
        out[name] = {"seconds": statistics.median(seconds), "peak_bytes": memory.read()}
    for name in ("guided_pass", "guided_pass_checkpointed"):
        out[name]["of_cfg_step"] = out[name]["seconds"] / out["cfg_step"]["seconds"]
        out[name]["memory_vs_cfg_step"] = out[name]["peak_bytes"] / out["cfg_step"]["peak_bytes"]
    return out


def worker(job: dict, out_path: str) -> None:
    torch.set_num_threads(job["threads"])
    model = load_model(job["model_channels"], job["device"], decoder=job["job"] == "variant", arch=job["arch"])
    result = gradient_check(model, job) if job["job"] == "gradient" else time_variant(model, job)
    with open(out_path, "w") as f:
        json.dump(result, f)


# ---- parent side: run the workers one after the other, then report ------------------------------

def run_worker(job: dict) -> dict:
    """Run one job in a fresh interpreter; its result, or {"error": ...} with the output's tail."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "result.json")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job),
                               "--worker-out", out_path], capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            print("\n".join(["worker failed:"] + tail), file=sys.stderr)
            last = tail[-1] if tail else f"exit status {proc.returncode}"
            return {"error": last}
        with open(out_path) as f:
            return json.load(f)


def measure_size(cfg: dict, size: int) -> dict:
    """Every variant at one size, each in its own process, one at a time."""
    results = {}
    for key, (label, _, _) in variants(cfg["arch"]).items():
        start = time.perf_counter()
        results[key] = run_worker(dict(cfg, job="variant", variant=key, size=size))
        status = results[key].get("error") or f"median {statistics.median(results[key]['seconds']):.2f} s"
        print(f"[{size} px] {label}: {status} ({time.perf_counter() - start:.0f} s with build and warm-up)",
              file=sys.stderr, flush=True)
    return summarize(results, cfg["arch"])


def summarize(results: dict, arch: str = "sd1") -> dict:
    """Rows with ratios to vanilla (None where a run failed), and the targets' quantities."""
    labels = variants(arch)
    base = results["vanilla"]
    base_s = None if "error" in base else statistics.median(base["seconds"])
    rows = {}
    for key, r in results.items():
        if "error" in r:
            rows[key] = {"label": labels[key][0], "error": r["error"]}
            continue
        s = statistics.median(r["seconds"])
        rows[key] = dict(r, label=labels[key][0], median_s=s,
                         time_ratio=None if base_s is None else s / base_s,
                         added_s=None if base_s is None else s - base_s,
                         memory_ratio=None if base_s is None else r["peak_bytes"] / base["peak_bytes"])
    return {"rows": rows, "checks": checks(rows)}


def checks(rows: dict) -> list[dict]:
    """The targets' quantities from one size's rows: what, value, target, met (None: not measured)."""
    def get(key, field):
        return rows[key].get(field)

    added_ref, added_strategy = get("reference", "added_s"), get("ref_strategy", "added_s")
    saving = added_strategy / added_ref if added_ref and added_ref > 0 and added_strategy is not None else None
    memory = [get(k, "memory_ratio") for k in TSAM_VARIANTS]
    items = [
        ("T-SAM disabled, time vs vanilla", get("disabled", "time_ratio"), "1.00x",
         lambda v: abs(v - 1) <= DISABLED_TOLERANCE),
        ("fast preset, time vs vanilla", get("fast", "time_ratio"), "<= 1.35x", lambda v: v <= 1.35),
        ("reference settings, time vs vanilla", get("reference", "time_ratio"), "<= 2.05x", lambda v: v <= 2.05),
        ("added time vs reference strategy: (strategy - vanilla) / (reference settings - vanilla)", saving,
         ">= 1.4x", lambda v: v >= 1.4),
        ("peak memory vs vanilla, T-SAM (max of reference settings, fast preset)",
         None if None in memory else max(memory), "<= 1.3x", lambda v: v <= 1.3),
    ]
    return [{"what": w, "value": v, "target": t, "met": None if v is None else bool(ok(v))} for w, v, t, ok in items]


def ratio(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def mib(n: int) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def size_table(size: int, summary: dict, cfg: dict) -> str:
    """Markdown: the variants' table and the targets' checks at one size."""
    lines = [f"### {size}x{size} px, {cfg['steps']} steps, batch {cfg['batch']}", "",
             "| variant | guided UNet passes | seconds | time vs vanilla | added seconds | peak memory "
             "| memory vs vanilla |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"].values():
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'].replace('|', '/')} | | | | | |")
            continue
        passes = "/".join(str(p) for p in sorted(set(r["guided_passes"])))
        added = "n/a" if r["added_s"] is None else f"{r['added_s']:+.2f}"
        lines.append(f"| {r['label']} | {passes} | {r['median_s']:.2f} | {ratio(r['time_ratio'])} | {added} "
                     f"| {mib(r['peak_bytes'])} | {ratio(r['memory_ratio'])} |")
    lines += ["", "| check | value | target | met |", "|---|---:|---:|---|"]
    for c in summary["checks"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[c["met"]]
        lines.append(f"| {c['what']} | {ratio(c['value'])} | {c['target']} | {met} |")
    return "\n".join(lines) + "\n"


def gradient_table(grad: dict) -> str:
    if "error" in grad:
        return f"### Gradient check\n\nfailed: {grad['error']}\n"
    lines = ["### Gradient check: d loss / d latent, truncated vs full UNet pass", "",
             "| size | loss (truncated) | loss (full) | max abs grad | max abs diff | relative diff | ~0 |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for size, g in grad.items():
        ok = "yes" if g["relative_diff"] <= GRADIENT_TOLERANCE else "**no**"
        lines.append(f"| {size} px | {g['loss_truncated']:.6f} | {g['loss_full']:.6f} | {g['max_abs_grad']:.3e} "
                     f"| {g['max_abs_diff']:.3e} | {g['relative_diff']:.3e} | {ok} |")
    lines += ["", "### One guided pass against one CFG step (batch 1, truncated pass, no refinement)", "",
              "| size | pass | seconds | of a CFG step | peak memory | memory vs CFG step |",
              "|---|---|---:|---:|---:|---:|"]
    for size, g in grad.items():
        for name, c in g["pass_cost"].items():
            of = f"{c['of_cfg_step']:.2f}" if "of_cfg_step" in c else "1"
            mem = f"{c['memory_vs_cfg_step']:.2f}x" if "memory_vs_cfg_step" in c else "1.00x"
            lines.append(f"| {size} px | {name.replace('_', ' ')} | {c['seconds']:.3f} | {of} | {mib(c['peak_bytes'])} "
                         f"| {mem} |")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def machine(cfg: dict) -> dict:
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "torch_threads": cfg["threads"], "torch": torch.__version__}
    if cfg["device"] == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def header(info: dict, cfg: dict, memory_method: str) -> str:
    device = f"GPU {info['gpu']}, fp16 weights under fp16 autocast" if "gpu" in info else "CPU, float32"
    full = cfg["model_channels"] == 320
    return "\n".join([
        "## T-SAM cost vs vanilla generation", "",
        f"- machine: {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), "
        f"torch {info['torch']}, torch threads: {info['torch_threads']}; {device}",
        f"- model: {cfg['arch']} architectures with random weights, UNet model_channels {cfg['model_channels']}"
        f"{'' if full else ' (reduced: not the real size)'}, attention on fused SDPA",
        f"- generation: \"{PROMPT}\", seed {SEED}, sampler {cfg['sampler']}, CFG 7.5, VAE decode included; "
        f"refinement {cfg['refine_iterations']} iterations (+ up to 10)",
        f"- timing: each variant in a fresh process, one {WARMUP_STEPS}-step warm-up of the same variant, "
        f"median of {cfg['repeats']} run(s); memory: {memory_method}",
        "- targets apply to 512 px, 50 steps, model_channels 320, batch 1", ""])


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sd1", choices=models.ARCHES, help="model family (default sd1)")
    p.add_argument("--sizes", type=int, nargs="+",
                   help=f"square image sizes in px, multiples of 64 (default {FULL['sizes']})")
    p.add_argument("--steps", type=int, help="sampler steps (default 50, the paper's count, which the targets assume)")
    p.add_argument("--sampler", default="DPM++ 2M", choices=sorted(pipeline.SAMPLERS),
                   help="A1111 sampler name (default DPM++ 2M: A1111's default, one model call per step)")
    p.add_argument("--batch", type=int, default=1, help="images per generation (default 1)")
    p.add_argument("--repeats", type=int, help="timed generations per variant, median reported (default 1)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model-channels", type=int, help="UNet base channels, a multiple of 32 (default 320 = SD1.5)")
    p.add_argument("--refine-iterations", type=int, help="refinement iterations, 1 to 50 (default 20, the reference's)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads in every worker (default %(default)s, torch's own)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--quick", action="store_true", help=f"tiny smoke-test configuration: {QUICK}")
    p.add_argument("--webui", metavar="URL", help="measure through a running WebUI's API instead "
                   "(e.g. http://127.0.0.1:7861; see webui_bench.py); --steps default 10, --sizes 512")
    p.add_argument("--webui-pid", type=int, help="with --webui: the local server's pid, for its peak RSS")
    p.add_argument("--rows", nargs="+", choices=list(webui_bench.ROWS), default=list(webui_bench.ROWS),
                   help="with --webui: the rows to measure (vanilla first)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else WEBUI if args.webui else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.worker is None:
        if any(s <= 0 or s % 64 for s in args.sizes):
            p.error("--sizes must be positive multiples of 64 (the UNet halves the latent 3 times)")
        if min(args.steps, args.batch, args.repeats, args.threads) < 1:
            p.error("--steps, --batch, --repeats and --threads must be at least 1")
        if not 1 <= args.refine_iterations <= 50:
            p.error("--refine-iterations must be between 1 and 50 (the extension's range)")
        if args.model_channels < 32 or args.model_channels % 32:
            p.error("--model-channels must be a positive multiple of 32 (GroupNorm's 32 groups)")
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None) -> int:
    """Print each section as soon as it is measured: a full-size CPU run takes hours."""
    args = parse(argv)
    if args.worker is not None:
        worker(json.loads(args.worker), args.worker_out)
        return 0
    if args.webui:
        return main_webui(args)
    cfg = {k: getattr(args, k) for k in ("arch", "sizes", "steps", "sampler", "batch", "repeats", "device",
                                         "model_channels", "refine_iterations", "threads")}
    report = {"machine": machine(cfg), "config": cfg, "memory": memory_method(cfg["device"]), "sizes": {}}

    def emit(text: str) -> None:
        print(text, flush=True)
        if args.json:  # rewritten after every section, so that an interrupted run keeps what it measured
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)

    emit(header(report["machine"], cfg, report["memory"]))
    report["gradient"] = run_worker(dict(cfg, job="gradient"))
    emit(gradient_table(report["gradient"]))
    for size in cfg["sizes"]:
        report["sizes"][str(size)] = summary = measure_size(cfg, size)
        emit(size_table(size, summary, cfg))
    rows = [r for s in report["sizes"].values() for r in s["rows"].values()]
    return 1 if "error" in report["gradient"] or any("error" in r for r in rows) else 0


def main_webui(args) -> int:
    """The rows through a running WebUI, one table per size (``webui_bench``)."""
    report = {"webui": args.webui, "sizes": {}}
    for size in args.sizes:
        before = webui_bench.load_average()
        result = webui_bench.measure(args.webui, args.rows, size, args.steps, args.sampler, args.repeats,
                                     args.webui_pid, log=lambda m: print(m, file=sys.stderr, flush=True))
        report["sizes"][str(size)] = result
        print(webui_bench.table(args.webui, size, args.steps, args.sampler, args.repeats, result,
                                f"{before} / {webui_bench.load_average()}"), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    return 1 if any("error" in r for s in report["sizes"].values() for r in s.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
