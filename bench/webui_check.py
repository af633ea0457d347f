"""T-SAM in a running WebUI, check by check, through its HTTP API (the WebUI's own samplers, hires
fix, img2img, scripts and infotext; nothing of T-SAM's is imported).

    python bench/webui_check.py --url http://127.0.0.1:7880 --family sdxl|sd2|sd1 [--log SERVER_LOG]
                                [--only NAME ...] [--size 128] [--steps 10] [--off-hashes FILE] [--absent]
                                [--refiner TITLE [--refiner-switch 0.3]] [--forge]

One line per check, ``PASS``/``FAIL name: figures``; the exit status is 1 if any failed. The
checkpoint of ``--family`` must be loaded (``--ckpt`` or the options endpoint). With ``--log``
(the server's console log) the guided steps are read from T-SAM's console lines ("T-SAM step
k/N") and checked: steps 1..N guided, each once, N = round(60% of the steps the sampler runs).
Off == absent: ``--off-hashes FILE`` records the pixels of unguided images (T-SAM disabled);
run again with ``--absent`` against a WebUI without the extension to compare them bit for bit.
``--forge`` adds the hires key Forge's API needs (``hr_additional_modules``; it fails without it).
"""

import argparse
import base64
import hashlib
import io
import json
import math
import os
import re
import sys
import urllib.request

PROMPT = "a black car and a white clock"
LONG = ("a red fox with a (fluffy tail:1.3) sitting beside a small wooden cabin in a snowy pine forest at dusk, "
        "warm light glowing from the square windows, smoke rising from a brick chimney, a frozen lake behind it "
        "BREAK a full moon in a clear violet sky above distant mountains, [soft] stars, a wooden sled leaning on "
        "a fence, footprints in fresh snow leading to the door, an old lantern hanging from a hook")
SAMPLERS = ("Euler a", "DPM++ 2M", "DPM++ SDE", "Heun", "DDIM", "UniPC", "Restart", "LCM")
REFERENCE_SAMPLERS = ("Euler a", "DPM++ 2M", "UniPC")
FAST = {"enabled": True, "refine": False}
REFERENCE = {"enabled": True}
STEP_LINE = re.compile(r"T-SAM step (\d+)/(\d+): loss ([-\d.e+naif]+)(?: -> ([-\d.e+naif]+) in (\d+) passes)?")
TRACE = re.compile(r"T-SAM loss trace: (.*?)(?:, [A-Z][\w -]*: |$)")  # "a -> b; c -> d (hires)"
PAIR = re.compile(r"([-\d.naif]+) -> ([-\d.naif]+)( \(hires\))?")


class Failed(Exception):
    pass


class WebUI:
    def __init__(self, url: str, log: str | None, size: int, steps: int = 10, forge: bool = False):
        self.url, self.log, self.size, self.steps = url.rstrip("/"), log, size, steps
        self.hires_keys = {"hr_additional_modules": ["Use same choices"]} if forge else {}

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as r:
            return json.loads(r.read())

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def generate(self, tsam: dict | None, path: str = "/sdapi/v1/txt2img", **fields) -> tuple[dict, list[str], str]:
        """(info, images as base64 PNGs, the console lines written meanwhile)."""
        body = {"prompt": PROMPT, "negative_prompt": "", "seed": 1234, "steps": self.steps, "width": self.size,
                "height": self.size, "sampler_name": "Euler a", "cfg_scale": 7, "save_images": False} | fields
        if tsam is not None:
            body.setdefault("alwayson_scripts", {})["T-SAM"] = {"args": [tsam]}
        start = os.path.getsize(self.log) if self.log else 0
        res = self.post(path, body)
        console = ""
        if self.log:
            with open(self.log, "rb") as f:
                f.seek(start)
                console = f.read().decode(errors="replace")
        return json.loads(res["info"]), res["images"], console


def pixels(image_b64: str) -> str:
    """sha256 of the decoded pixels (PNG chunks such as the infotext excluded)."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(image_b64))) as im:
        return hashlib.sha256(im.mode.encode() + repr(im.size).encode() + im.tobytes()).hexdigest()


def traces(info: dict) -> list[list[tuple[float, float, bool]]]:
    """Per infotext: its T-SAM loss traces (first, last, hires)."""
    found = [TRACE.search(text) for text in info["infotexts"]]
    return [[(float(a), float(b), bool(h)) for a, b, h in PAIR.findall(m.group(1))] if m else [] for m in found]


def expect_guided(info: dict, n_images: int | None = None, keys: tuple[str, ...] = ()) -> str:
    """The T-SAM keys and a finite trace in each image's infotext, no error or warning."""
    texts = info["infotexts"][:n_images] if n_images else info["infotexts"]
    for i, text in enumerate(texts):
        for key in ("T-SAM gamma", "T-SAM alpha", "T-SAM guided steps", "T-SAM loss trace") + keys:
            if key not in text:
                raise Failed(f"image {i + 1}: no '{key}' in the infotext")
        for bad in ("T-SAM error", "T-SAM warning"):
            if bad in text:
                raise Failed(f"image {i + 1}: {text[text.index(bad):].split(', T-SAM')[0]}")
    found = traces({"infotexts": texts})
    if not all(found) or not all(math.isfinite(v) for t in found for a, b, _ in t for v in (a, b)):
        raise Failed(f"traces {found}")
    return "; ".join(" ".join(f"{a:.4f}->{b:.4f}{' (hires)' if h else ''}" for a, b, h in t) for t in found)


def steps_run(sampler: str, steps: int) -> int | None:
    """Sampler steps A1111 1.10.1 runs at ``steps`` in txt2img (None: Restart runs another count)."""
    if sampler == "DDIM":  # timesteps range(0, 1000, 1000 // steps), one step between each two
        return len(range(0, 1000, 1000 // steps)) - 1
    return None if sampler == "Restart" else steps


def expect_steps(console: str, sampler: str, steps: int, refine: bool) -> str:
    """The guided steps of the console: 1..N in order, N = round(60%) of the steps run; refinement
    (several passes) at nominal 0/20/40% where asked."""
    if not console:
        return "no log"
    lines = [(int(k), int(n), int(p or 1)) for k, n, _a, _b, p in STEP_LINE.findall(console)]
    if not lines:
        raise Failed("no 'T-SAM step' line in the console")
    ks, ns = [k for k, _, _ in lines], {n for _, n, _ in lines}
    if len(ns) != 1 or ks != sorted(set(ks)):
        raise Failed(f"guided steps {ks} of {ns}")
    n = ns.pop()
    run = steps_run(sampler, steps)
    if run is not None and (ks != list(range(1, n + 1)) or n != math.floor(0.6 * run + 0.5)):
        raise Failed(f"guided steps {ks} of {n}, expected 1..{math.floor(0.6 * run + 0.5)} of {run} steps run")
    refined = [k for k, _, p in lines if p > 1]
    if refine and not refined or not refine and refined:
        raise Failed(f"refined at steps {refined} with refine={refine}")
    losses = [float(m[3] or m[2]) for m in STEP_LINE.findall(console)]
    if not all(math.isfinite(v) for v in losses):
        raise Failed(f"step losses {losses}")
    return f"guided steps {ks[0]}..{ks[-1]} of N={n}" + (f", refined at {refined}" if refined else "")


def check_sampler(ui: WebUI, sampler: str, preset: dict):
    steps = 2 * ui.steps if sampler == "Restart" else ui.steps
    info, _, console = ui.generate(preset, sampler_name=sampler, steps=steps)
    return f"{expect_guided(info)}; {expect_steps(console, sampler, steps, preset.get('refine', True))}"


def check_batch(ui: WebUI):
    """Batch 2, two prompts (Prompt matrix "a|b": "a", "a, b"), each image its own T and trace."""
    info, images, console = ui.generate(FAST, batch_size=2, prompt="a black car|and a white clock",
                                        script_name="prompt matrix", script_args=[False, False, "positive", "comma", 0])
    texts = info["infotexts"][-2:]
    found = expect_guided({"infotexts": texts})
    if texts[0].split("\n")[0] == texts[1].split("\n")[0] or traces({"infotexts": texts})[0] == traces({"infotexts": texts})[1]:
        raise Failed(f"the two images share prompt or trace: {found}")
    if ui.log and not re.search(r"image 1: .* image 2: ", console):
        raise Failed("no per-image loss summary in the console")
    return found


def check_hires(ui: WebUI, guide_second: bool):
    info, _, console = ui.generate(FAST | {"hires": guide_second}, enable_hr=True, hr_scale=1.5, denoising_strength=0.5,
                                   hr_second_pass_steps=6, hr_upscaler="Latent", **ui.hires_keys)
    found = expect_guided(info, keys=("T-SAM hires pass",))
    hires = any(h for t in traces(info) for *_x, h in t)
    if hires != guide_second:
        raise Failed(f"hires trace {'missing' if guide_second else 'present'}: {found}")
    return found


def check_img2img(ui: WebUI):
    _, images, _ = ui.generate(None, steps=4)
    info, _, console = ui.generate(FAST, "/sdapi/v1/img2img", init_images=[images[0]], denoising_strength=0.6)
    found = expect_guided(info)
    run = int(0.6 * ui.steps) + 1  # t_enc + 1 steps of img2img at denoising 0.6
    if console and f"/{math.floor(0.6 * run + 0.5)}:" not in console:
        raise Failed(f"{found}; guided steps not of {run} steps run: {STEP_LINE.findall(console)}")
    return found


def check_long(ui: WebUI):
    info, _, console = ui.generate(FAST, prompt=LONG)
    return expect_guided(info)


def check_text_encoder(ui: WebUI):
    out = {}
    for choice in ("both", "clip-l", "bigg"):
        info, _, _ = ui.generate(FAST | {"text_encoder": choice})
        expect_guided(info)
        if f"T-SAM text encoder: {choice}" not in info["infotexts"][0]:
            raise Failed(f"text encoder {choice} not in the infotext")
        out[choice] = traces(info)[0][0][:2]
    if len(set(out.values())) != 3:
        raise Failed(f"the encoders give the same trace: {out}")
    return ", ".join(f"{k} {a:.4f}->{b:.4f}" for k, (a, b) in out.items())


def check_xyz(ui: WebUI):
    """An X/Y/Z plot over "[T-SAM] Text encoder for T": three guided cells, three encoders."""
    xyz = next(s for s in ui.get("/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axes = xyz["args"][0]["choices"]
    axis = next(i for i, name in enumerate(axes) if "T-SAM" in name and "ext encoder" in name)
    args = [axis, "both,clip-l,bigg", ["both", "clip-l", "bigg"], 0, "", [], 0, "", [], True, True, False, False,
            False, False, False, 0, True]
    info, images, _ = ui.generate(FAST, script_name="x/y/z plot", script_args=args)
    cells = info["infotexts"][-3:]  # after the grid's
    chosen = [re.search(r"T-SAM text encoder: ([\w-]+)", t).group(1) for t in cells]
    if sorted(chosen) != ["bigg", "both", "clip-l"]:
        raise Failed(f"cells' text encoders {chosen} (axis {axes[axis]!r})")
    return f"axis {axes[axis]!r}: cells {chosen}; {expect_guided({'infotexts': cells})}"


def check_refiner(ui: WebUI, refiner: str, switch: float = 0.3):
    info, _, console = ui.generate(FAST, refiner_checkpoint=refiner, refiner_switch_at=switch)
    said = [line for line in console.splitlines() if "refiner" in line and "T-SAM" in line]
    if ui.log and not said:
        raise Failed(f"nothing said about the refiner in the console; {STEP_LINE.findall(console)}")
    text = info["infotexts"][0]
    if "T-SAM error" in text or "Refiner" not in text:
        raise Failed(text)
    return f"{said[0].strip() if said else ''}; trace {traces(info)[0]}"


def check_diagnostics(ui: WebUI):
    info, images, _ = ui.generate(FAST | {"diagnostics": True})
    if len(images) != 2 or "T-SAM diagnostics" not in info["infotexts"][-1]:
        raise Failed(f"{len(images)} images, captions {info['infotexts'][1:]}")
    from PIL import Image
    with Image.open(io.BytesIO(base64.b64decode(images[1]))) as im:
        return f"image + figure {im.size[0]}x{im.size[1]}"


def check_off(ui: WebUI, record: str | None, absent: bool):
    """Off == absent: T-SAM disabled vs no T-SAM entry (same server), and vs a WebUI without the
    extension (hashes recorded in ``record`` by the run with it, compared by the ``--absent`` run)."""
    cases = {"txt2img": {}, "hires": {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5,
                                      "hr_second_pass_steps": 4, "hr_upscaler": "Latent"} | ui.hires_keys}
    hashes = {}
    for name, fields in cases.items():
        _, plain, _ = ui.generate(None, **fields)
        if not absent:
            info, off, _ = ui.generate({"enabled": False}, **fields)
            if pixels(off[0]) != pixels(plain[0]) or "T-SAM" in info["infotexts"][0]:
                raise Failed(f"{name}: disabled differs from no entry")
        hashes[name] = pixels(plain[0])
    if record and not absent:
        with open(record, "w") as f:
            json.dump(hashes, f)
        return f"disabled == no entry (txt2img, hires); hashes written to {record}"
    if record and absent:
        with open(record) as f:
            installed = json.load(f)
        if installed != hashes:
            raise Failed(f"installed {installed} vs absent {hashes}")
        return f"absent == installed-and-off, bitwise: {hashes}"
    return "disabled == no entry (txt2img, hires)"


def checks(family: str, args) -> dict:
    found = {f"sampler {s}, fast": (check_sampler, s, FAST) for s in SAMPLERS}
    found |= {f"sampler {s}, reference": (check_sampler, s, REFERENCE) for s in REFERENCE_SAMPLERS}
    found |= {"batch 2, two prompts": (check_batch,), "hires, first pass": (check_hires, False),
              "hires, both passes": (check_hires, True), "img2img": (check_img2img,),
              "90 tokens, BREAK, emphasis": (check_long,), "diagnostics": (check_diagnostics,)}
    if family == "sdxl":
        found |= {"text encoder both/clip-l/bigg": (check_text_encoder,), "X/Y/Z text encoder axis": (check_xyz,)}
    if args.refiner:
        found[f"refiner {args.refiner} at {args.refiner_switch}"] = (check_refiner, args.refiner, args.refiner_switch)
    found["off == absent"] = (check_off, args.off_hashes, args.absent)
    if args.absent:
        return {"off == absent": found["off == absent"]}
    return {k: v for k, v in found.items() if not args.only or any(o.lower() in k.lower() for o in args.only)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7861")
    p.add_argument("--family", choices=("sdxl", "sd2", "sd1"), required=True)
    p.add_argument("--log", help="the server's console log (T-SAM's step lines are checked from it)")
    p.add_argument("--size", type=int, default=128, help="px (small: the checks are about plumbing, not pictures)")
    p.add_argument("--only", nargs="+", help="run the checks whose name contains one of these")
    p.add_argument("--refiner", help="checkpoint title to switch to (another family's tiny checkpoint)")
    p.add_argument("--refiner-switch", type=float, default=0.3, help="refiner switch point (0.3: T-SAM's guided "
                   "steps go on after the switch, on the refiner)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps of every request (Restart: twice)")
    p.add_argument("--forge", action="store_true", help="send the hires key Forge's API needs")
    p.add_argument("--off-hashes", help="file for the unguided images' pixel hashes (off == absent)")
    p.add_argument("--absent", action="store_true", help="the extension is not installed: compare with --off-hashes")
    args = p.parse_args()
    ui = WebUI(args.url, args.log, args.size, args.steps, args.forge)
    model = ui.get("/sdapi/v1/options")["sd_model_checkpoint"]
    print(f"{args.url}: {model} ({args.family}), {args.size} px", flush=True)
    return report({name: (func, ui, *fargs) for name, (func, *fargs) in checks(args.family, args).items()})


def report(found: dict, only=None) -> int:
    """Run each check ``name: (func, *args)`` whose name contains one of ``only`` (all without),
    one ``PASS``/``FAIL`` line each; 1 if any failed, else 0."""
    failed = 0
    for name, (func, *fargs) in found.items():
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        try:
            print(f"PASS {name}: {func(*fargs)}", flush=True)
        except Exception as e:  # noqa: BLE001 - a failed check is reported, the next one runs
            failed += 1
            print(f"FAIL {name}: {type(e).__name__ if not isinstance(e, Failed) else ''} {e}".replace("  ", " "),
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
