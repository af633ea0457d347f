"""T-SAM beside other extensions in a running A1111, check by check, through its HTTP API: Dynamic
Prompts (sd-dynamic-prompts), the built-in Lora and Hypertile, Regional Prompter (Attention mode).
The harness of ``../shared/tools/webui/`` (random SD1.5 checkpoint) with those extensions installed
and a random LoRA (``bench/make_random_lora.py``) in ``models/Lora``. Dynamic Prompts registers
its settings (``dp_*``, read by its ``process``) only through ``on_ui_settings``: start the WebUI
with its UI (``UI=1 ./start.sh``; ``--nowebui`` never runs those callbacks), and a snapshot older
than its PR #760 registers them too late even then (AttributeError ``dp_ignore_whitespace``).

    python bench/webui_extensions_check.py --url http://127.0.0.1:7880 --log SERVER_LOG --lora NAME
                                           [--only NAME ...] [--size 256] [--steps 6]
                                           [--off-hashes FILE] [--absent]

One line per check, ``PASS``/``FAIL name: figures`` (loss traces, pixel hashes, seconds per request);
the exit status is 1 if any failed. Off == absent: the run with T-SAM installed records the pixels
of its ``{"enabled": false}`` images in ``--off-hashes``; run again with ``--absent`` against the
WebUI restarted without the T-SAM folder to compare them bit for bit. The request, the T-SAM
arguments and the infotext and console readers are ``webui_check.py``'s.
"""

import argparse
import json
import re
import sys
import time

from webui_check import FAST, PROMPT, STEP_LINE, Failed, WebUI, expect_guided, expect_steps, pixels, traces, report

SAMPLER = "Euler a"
SEED = 1234
VARIANTS = "a {black|red} car and a white clock"
FINAL = ("a black car and a white clock", "a red car and a white clock")  # VARIANTS' combinations, in order
RP_PROMPT = "a black car BREAK a white clock"
OWN_LINES = re.compile(r"T-SAM step \d+/\d+: |T-SAM loss \(first -> last guided pass\): ")
TRACE_TOL = 2e-4  # the infotext's 4 decimals, and batch-of-2 vs batch-of-1 float sums


class Run:
    """The WebUI, the scripts' default API arguments, and the figures shared between checks."""

    def __init__(self, ui: WebUI, steps: int, lora: str, absent: bool):
        self.ui, self.steps, self.lora, self.absent = ui, steps, lora, absent
        info = {s["name"]: s for s in ui.get("/sdapi/v1/script-info") if not s["is_img2img"]}
        self.defaults = {name: [a["value"] for a in info[name]["args"]] for name in info}
        self.dp_name = next(n for n in info if n.startswith("dynamic prompts"))
        self.plain_cache = {}

    def script(self, name: str, changes: dict[int, object]) -> dict:
        args = list(self.defaults[name])
        for index, value in changes.items():
            args[index] = value
        return {name: {"args": args}}

    def dynamic_prompts(self) -> dict:
        """Combinatorial: every combination once, one batch (ui() order: is_enabled, is_combinatorial,
        combinatorial_batches, ..., max_generations at 15)."""
        return self.script(self.dp_name, {0: True, 1: True, 2: 1, 15: 0})

    def regional_prompter(self) -> dict:
        """Attention mode, Matrix tab, 2 columns 1,1 (rp.py ui() order: active, debug, tab, mmode,
        xmode, pmode, ratios, baseratios, usebase, usecom, usencom, calcmode, options, ...)."""
        return self.script("regional prompter", {0: True, 1: False, 2: "Matrix", 3: "Columns", 6: "1,1",
                                                 8: False, 9: False, 10: False, 11: "Attention", 12: []})

    def generate(self, tsam: dict | None, batch: int = 1, scripts: dict | None = None, **fields):
        """(infotexts and seeds, pixel hashes, console, seconds)."""
        body = {"steps": self.steps, "sampler_name": SAMPLER, "batch_size": batch, "seed": SEED} | fields
        if scripts:
            body["alwayson_scripts"] = dict(scripts)
        t0 = time.monotonic()
        info, images, console = self.ui.generate(None if self.absent else tsam, **body)
        seconds = time.monotonic() - t0
        first = info.get("index_of_first_image", 0)
        made = images[first:first + batch]
        if len(made) != batch:
            raise Failed(f"{len(images)} images for batch {batch} (first {first})")
        info = {"infotexts": info["infotexts"][first:first + batch], "seeds": info["all_seeds"][:batch],
                "prompts": info["all_prompts"][:batch]}
        return info, [pixels(m) for m in made], console, seconds

    def plain(self, prompt: str, seed: int):
        """T-SAM on, no other extension at work: (info, console, seconds), made once per prompt and seed."""
        if (prompt, seed) not in self.plain_cache:
            info, _, console, seconds = self.generate(FAST, prompt=prompt, seed=seed)
            guided(self, info, console)
            self.plain_cache[prompt, seed] = info, console, seconds
        return self.plain_cache[prompt, seed]


def tsam_lines(console: str) -> list[str]:
    """T-SAM console lines other than its step lines and loss summary (warnings, stops)."""
    return [line for line in console.splitlines() if "T-SAM" in line and not OWN_LINES.search(line)]


def guided(run: Run, info: dict, console: str) -> str:
    unexpected = tsam_lines(console)
    if unexpected:
        raise Failed(f"T-SAM console: {unexpected}")
    return f"{expect_guided(info)}; {expect_steps(console, SAMPLER, run.steps, False)}"


def trace(info: dict, image: int = 0) -> tuple[float, float]:
    return traces(info)[image][0][:2]


def same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(abs(x - y) <= TRACE_TOL for x, y in zip(a, b))


def check_dp_on(run: Run):
    """Batch 2, one image per variant: each guided, and its trace that of its final prompt alone."""
    info, hashes, console, seconds = run.generate(FAST, batch=2, prompt=VARIANTS, scripts=run.dynamic_prompts())
    found = guided(run, info, console)
    if tuple(info["prompts"]) != FINAL or hashes[0] == hashes[1]:
        raise Failed(f"prompts {info['prompts']}, hashes {hashes}")
    said = []
    for i, (prompt, seed) in enumerate(zip(info["prompts"], info["seeds"])):
        alone, _, t_alone = run.plain(prompt, seed)
        other, _, _ = run.plain(FINAL[1 - i], seed)
        a, b, c = trace(info, i), trace(alone), trace(other)
        if not same(a, b) or same(a, c):
            raise Failed(f"image {i + 1} ({prompt!r}, seed {seed}): trace {a} vs its prompt alone {b}, "
                         f"vs the other variant's prompt {c}")
        said.append(f"image {i + 1} {prompt!r} seed {seed}: {a[0]:.4f}->{a[1]:.4f} == alone {b[0]:.4f}->{b[1]:.4f} "
                    f"({t_alone:.0f} s), != other prompt {c[0]:.4f}->{c[1]:.4f}")
    return f"{found}; {'; '.join(said)}; sha256 {hashes[0][:16]}, {hashes[1][:16]}; {seconds:.0f} s"


def check_off(run: Run, name: str, record: str | None, **request):
    """T-SAM disabled (installed) or absent: the pixels, recorded or compared."""
    info, hashes, _, seconds = run.generate({"enabled": False}, **request)
    if any("T-SAM" in t for t in info["infotexts"]):
        raise Failed("T-SAM in the infotext")
    short = ", ".join(h[:16] for h in hashes)
    if not record:
        return f"sha256 {short} (no --off-hashes: nothing compared); {seconds:.0f} s"
    try:
        with open(record) as f:
            known = json.load(f)
    except FileNotFoundError:
        known = {}
    if not run.absent:
        known[name] = hashes
        with open(record, "w") as f:
            json.dump(known, f, indent=1)
        return f"installed, off: sha256 {short} recorded in {record}; {seconds:.0f} s"
    if known.get(name) != hashes:
        raise Failed(f"absent {hashes} vs installed-and-off {known.get(name)}")
    return f"absent == installed-and-off, bitwise: sha256 {short}; {seconds:.0f} s"


def check_lora(run: Run):
    tag = f" <lora:{run.lora}:1>"
    info, hashes, console, seconds = run.generate(FAST, prompt=PROMPT + tag)
    found = guided(run, info, console)
    plain, _, t_plain = run.plain(PROMPT, SEED)
    if "Lora hashes" not in info["infotexts"][0]:
        raise Failed(f"no 'Lora hashes' in the infotext: the LoRA was not applied ({found})")
    with_lora, without = trace(info), trace(plain)
    if with_lora[0] == without[0]:
        raise Failed(f"first loss {with_lora[0]:.4f} with the LoRA == without")
    return (f"{found}; first loss {with_lora[0]:.4f} with the LoRA vs {without[0]:.4f} without; "
            f"sha256 {hashes[0][:16]}; {seconds:.0f} s (without {t_plain:.0f} s)")


def check_hypertile(run: Run, max_tile: int | None):
    """Hypertile tiles the UNet's self-attention (attn1) by a random divisor of the latent side down
    to ``max(128, tile) // 8`` latent px: at 256 px its default max tile (256) leaves one tile."""
    settings = {"hypertile_enable_unet": True} | ({"hypertile_max_tile_unet": max_tile} if max_tile else {})
    info, hashes, console, seconds = run.generate(FAST, override_settings=settings)
    found = guided(run, info, console)
    if "Hypertile U-Net: True" not in info["infotexts"][0]:
        raise Failed(f"no 'Hypertile U-Net: True' in the infotext ({found})")
    plain, _, t_plain = run.plain(PROMPT, SEED)
    on, off = trace(info), trace(plain)
    return (f"{found}; first loss {on[0]:.4f} with Hypertile vs {off[0]:.4f} without "
            f"({'equal' if on[0] == off[0] else 'differs'}); sha256 {hashes[0][:16]}; {seconds:.0f} s")


def check_rp_on(run: Run):
    """Reported, not judged: what T-SAM says and does with RP's hooked cross-attention."""
    info, hashes, console, seconds = run.generate(FAST, prompt=RP_PROMPT, scripts=run.regional_prompter())
    text = info["infotexts"][0]
    tsam = re.findall(r"T-SAM (?:error|warning)[^,]*: [^\n]*?(?=, [A-Z][\w -]*: |$)", text)
    steps = [(int(k), float(a)) for k, _n, a, _b, _p in STEP_LINE.findall(console)]
    errors = [line for line in console.splitlines() if re.search(r"Error|Traceback|Warning", line)]
    plain, _, _ = run.plain(RP_PROMPT, SEED)
    return (f"RP active: {'RP Active: True' in text}; infotext T-SAM trace {traces(info)[0] or 'none'}, "
            f"notes {tsam or 'none'}; console steps {steps}; other T-SAM lines {tsam_lines(console) or 'none'}; "
            f"console errors/warnings {errors or 'none'}; without RP {trace(plain)[0]:.4f}->{trace(plain)[1]:.4f}; "
            f"image sha256 {hashes[0][:16]}; {seconds:.0f} s")


def check_rp_count(run: Run):
    """RP's layer counter after a generation (its debug ``logger`` prints ``count = N`` at
    postprocess): RP counts every hooked attn2 call and wraps at 16 (SD1.x), so sampling alone ends
    at 0; each truncated T-SAM pass adds the calls it made. Also the query count RP saw at each
    count == 0 (its ``input :`` debug line), which is the first layer only without extra calls."""
    scripts = run.regional_prompter()
    scripts["regional prompter"]["args"][1] = True  # a_debug
    info, hashes, console, seconds = run.generate(FAST, prompt=RP_PROMPT, scripts=scripts)
    counts = re.findall(r"^count = (\d+)", console, re.M)
    inputs = re.findall(r"^input :  torch.Size\(\[(\d+), (\d+), (\d+)\]\)", console, re.M)
    seen = sorted({(int(n), int(q)) for n, q, _c in inputs})
    return (f"trace {traces(info)[0]}; RP count at the end {counts or 'not printed'}; "
            f"(batch, queries) at RP's count 0: {seen}; sha256 {hashes[0][:16]}; {seconds:.0f} s")


def checks(run: Run, record: str | None) -> dict:
    """Name: (function, its arguments); only the off == absent ones with ``--absent``."""
    off = {"Dynamic Prompts": {"batch": 2, "prompt": VARIANTS, "scripts": run.dynamic_prompts()},
           "LoRA": {"prompt": f"{PROMPT} <lora:{run.lora}:1>"},
           "Regional Prompter": {"prompt": RP_PROMPT, "scripts": run.regional_prompter()}}
    found = {} if run.absent else {
        "Dynamic Prompts, batch 2, T-SAM on": (check_dp_on, run), "LoRA, T-SAM on": (check_lora, run),
        "Hypertile, T-SAM on": (check_hypertile, run, None),
        "Hypertile max tile 128, T-SAM on": (check_hypertile, run, 128), "Regional Prompter Attention, T-SAM on": (check_rp_on, run),
        "Regional Prompter count, T-SAM on": (check_rp_count, run)}
    return found | {f"{name}, T-SAM off == absent": (lambda r=request, n=name: check_off(run, n, record, **r),)
                    for name, request in off.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7880")
    p.add_argument("--log", help="the server's console log (T-SAM's step lines and warnings are read from it)")
    p.add_argument("--lora", default="tsam_random", help="a LoRA in models/Lora (bench/make_random_lora.py)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--only", nargs="+", help="run the checks whose name contains one of these")
    p.add_argument("--off-hashes", help="file for the unguided images' pixel hashes (off == absent)")
    p.add_argument("--absent", action="store_true", help="T-SAM is not installed: compare with --off-hashes")
    args = p.parse_args()
    ui = WebUI(args.url, args.log, args.size)
    run = Run(ui, args.steps, args.lora, args.absent)
    print(f"{args.url}: {ui.get('/sdapi/v1/options')['sd_model_checkpoint']}, {run.dp_name}, "
          f"{args.size} px, {args.steps} steps {SAMPLER}, seed {SEED}{', T-SAM absent' if args.absent else ''}",
          flush=True)
    return report(checks(run, args.off_hashes), args.only)


if __name__ == "__main__":
    sys.exit(main())
