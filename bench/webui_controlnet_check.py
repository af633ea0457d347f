"""T-SAM with the real sd-webui-controlnet in a running A1111, check by check, through its HTTP API
(the harness of ``../shared/tools/webui/CONTROLNET.md``: random SD1.5 checkpoint, random ControlNet).

    python bench/webui_controlnet_check.py --url http://127.0.0.1:7880 --log SERVER_LOG
                                           [--only NAME ...] [--size 256] [--steps 6]

One line per check, ``PASS``/``FAIL name: figures`` (losses, pixel hashes, seconds per request);
the exit status is 1 if any failed. The request, the T-SAM arguments and the infotext and console
readers are ``webui_check.py``'s. ControlNet returns its control map after the generated images:
only the generated ones are compared. A T-SAM console line other than its step lines and its loss
summary (a warning, a stop) fails the check that printed it.
"""

import argparse
import base64
import io
import math
import re
import sys
import time

from webui_check import FAST, STEP_LINE, Failed, WebUI, expect_guided, expect_steps, pixels, traces, report

SAMPLER = "Euler a"
OWN_LINES = re.compile(r"T-SAM step \d+/\d+: |T-SAM loss \(first -> last guided pass\): ")


def control_image(size: int) -> str:
    """A base64 PNG of shapes on black: what ``"module": "none"`` passes to the ControlNet as is."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(im)
    draw.rectangle((size // 8, size // 2, size // 2, size * 7 // 8), outline="white", width=3)
    draw.ellipse((size // 2, size // 8, size * 7 // 8, size // 2), outline="white", width=3)
    draw.line((0, size * 3 // 4, size, size // 4), fill="white", width=2)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Run:
    """The WebUI, the model and control image of every request, and the figures of each request."""

    def __init__(self, ui: WebUI, model: str, steps: int):
        self.ui, self.model, self.steps = ui, model, steps
        self.image = control_image(ui.size)
        self.plain = None  # T-SAM on without ControlNet: (infotexts, seconds, console), made once when asked

    def without_controlnet(self) -> tuple[dict, float, str]:
        if self.plain is None:
            info, _, console, seconds = self.generate(FAST, None)
            guided(self, info, console)
            self.plain = info, seconds, console
        return self.plain

    def unit(self, **fields) -> dict:
        return {"enabled": True, "image": self.image, "module": "none", "model": self.model, "weight": 1.0,
                "resize_mode": "Crop and Resize", "pixel_perfect": False} | fields

    def generate(self, tsam: dict | None, units: list[dict] | None, batch: int = 1):
        """(infotexts and pixel hashes of the generated images only, console, seconds)."""
        fields = {"steps": self.steps, "sampler_name": SAMPLER, "batch_size": batch}
        if units:
            fields["alwayson_scripts"] = {"controlnet": {"args": units}}
        t0 = time.monotonic()
        info, images, console = self.ui.generate(tsam, **fields)
        seconds = time.monotonic() - t0
        first = info.get("index_of_first_image", 0)
        made = images[first:first + batch]
        extra = len(images) - first - batch
        if len(made) != batch or extra != (len(units) if units else 0):
            raise Failed(f"{len(images)} images for batch {batch} with {len(units or [])} units (first {first})")
        unexpected = [line for line in console.splitlines() if "T-SAM" in line and not OWN_LINES.search(line)]
        if unexpected:
            raise Failed(f"T-SAM console: {unexpected}")
        return {"infotexts": info["infotexts"][first:first + batch]}, [pixels(m) for m in made], console, seconds


def guided(run: Run, info: dict, console: str) -> str:
    return f"{expect_guided(info)}; {expect_steps(console, SAMPLER, run.steps, False)}"


def first_loss(info: dict, image: int = 0) -> float:
    return traces(info)[image][0][0]


def check_off(run: Run):
    _, alone, _, t_alone = run.generate(None, [run.unit()])
    info, off, _, t_off = run.generate({"enabled": False}, [run.unit()])
    if off != alone or "T-SAM" in info["infotexts"][0]:
        raise Failed(f"T-SAM off {off[0][:16]} vs ControlNet alone {alone[0][:16]}")
    return f"pixels identical, sha256 {alone[0][:16]}; {t_alone:.0f} s alone, {t_off:.0f} s off"


def check_on(run: Run):
    plain, plain_seconds, _ = run.without_controlnet()
    info, hashes, console, seconds = run.generate(FAST, [run.unit()])
    found = guided(run, info, console)
    with_cn, without = first_loss(info), first_loss(plain)
    if with_cn == without:
        raise Failed(f"first loss {with_cn:.4f} with ControlNet == without")
    return (f"{found}; first loss {with_cn:.4f} with ControlNet vs {without:.4f} without ({expect_guided(plain)}); "
            f"sha256 {hashes[0][:16]}; {seconds:.0f} s (without ControlNet {plain_seconds:.0f} s)")


def check_batch(run: Run):
    info, hashes, console, seconds = run.generate(FAST, [run.unit()], batch=2)
    found = guided(run, info, console)
    if hashes[0] == hashes[1]:
        raise Failed(f"the two images are the same: {found}")
    return f"{found}; sha256 {hashes[0][:16]}, {hashes[1][:16]}; {seconds:.0f} s"


def step_losses(console: str) -> list[float]:
    """The loss of each guided step (before its refinement) from T-SAM's console lines."""
    return [float(m[2]) for m in STEP_LINE.findall(console)]


def check_late_start(run: Run, start: float):
    """A unit that starts at ``start``: a guided step with the unit off has the loss without
    ControlNet (same seed, same latent so far), one with it on another loss, and guidance runs on.
    Which steps are off is what sampling applies: ControlNet's window reads ``state.sampling_step``,
    which k-diffusion's callback sets after a step's model call, so call i sees step max(i - 1, 0)."""
    info, _, console, seconds = run.generate(FAST, [run.unit(guidance_start=start)])
    found = guided(run, info, console)
    late, plain = step_losses(console), step_losses(run.without_controlnet()[2])
    off = [max(i - 1, 0) / run.steps < start for i in range(len(late))]
    wrong = [i + 1 for i, (a, b, o) in enumerate(zip(late, plain, off)) if math.isclose(a, b, abs_tol=1.5e-4) != o]
    if len(late) != len(plain) or wrong:
        raise Failed(f"step losses {late} vs {plain} without ControlNet, unit off at {off}: steps {wrong} wrong")
    said = ", ".join(f"{a:.4f}{'==' if o else '!='}{b:.4f}" for a, b, o in zip(late, plain, off))
    return f"{found}; step losses (with unit vs without ControlNet) {said}; {seconds:.0f} s"


def check_reference(run: Run):
    unit = run.unit(module="reference_only", model="None")
    info, hashes, console, seconds = run.generate(FAST, [unit], batch=2)
    return f"{guided(run, info, console)}; sha256 {hashes[0][:16]}, {hashes[1][:16]}; {seconds:.0f} s"


def check_two_units(run: Run):
    units = [run.unit(), run.unit(module="invert", weight=0.5, guidance_end=0.5)]
    info, hashes, console, seconds = run.generate(FAST, units)
    return f"{guided(run, info, console)}; sha256 {hashes[0][:16]}; {seconds:.0f} s"


def checks(run: Run) -> dict:
    return {"T-SAM off == ControlNet alone": (check_off, run), "T-SAM on + ControlNet": (check_on, run),
            "batch 2 + ControlNet": (check_batch, run), "ControlNet guidance start 0.5": (check_late_start, run, 0.5),
            "ControlNet guidance start 0.3": (check_late_start, run, 0.3),
            "reference_only, batch 2": (check_reference, run), "two units (none + invert)": (check_two_units, run)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7880")
    p.add_argument("--log", help="the server's console log (T-SAM's step lines and warnings are read from it)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--only", nargs="+", help="run the checks whose name contains one of these")
    args = p.parse_args()
    ui = WebUI(args.url, args.log, args.size)
    model = next(m for m in ui.get("/controlnet/model_list")["model_list"] if "random" in m)
    print(f"{args.url}: {ui.get('/sdapi/v1/options')['sd_model_checkpoint']}, ControlNet "
          f"API {ui.get('/controlnet/version')['version']} model {model}, {args.size} px, {args.steps} steps {SAMPLER}",
          flush=True)
    run = Run(ui, model, args.steps)
    return report(checks(run), args.only)


if __name__ == "__main__":
    sys.exit(main())
