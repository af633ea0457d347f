"""T-SAM checked in a running Forge through its HTTP API: what a user gets. (The requests work on
A1111 too; what is Forge's: the hires key its API needs, a LoRA loaded and removed, and stock
Forge's state after a checkpoint it cannot load. bench/webui_check.py is the A1111 / family check.)

    python bench/forge_check.py --url http://127.0.0.1:7870 --out DIR refs      # extension absent: reference images
    python bench/forge_check.py --url http://127.0.0.1:7870 --out DIR check     # extension installed: every check
    python bench/forge_check.py --url ... --out DIR models NAME...              # guided run on other checkpoints
    python bench/forge_check.py lora FILE                                       # a tiny random SD 1.5 LoRA

``refs`` stores one PNG per reference request; ``check`` sends the same requests with T-SAM's entry
off (no entry, positional ``[False]``, dict ``{"enabled": false}``) and compares them bitwise with
the references, runs T-SAM on (fast preset: refinement off) in txt2img, a batch of two different
prompts, hires fix, img2img and with a LoRA, then the references again after the LoRA was used
and removed (``lora`` writes it: put it in the WebUI's Lora folder as ``tsam_check.safetensors``
before ``refs``). Every line printed is one check with its verdict. The small size and step count
keep a CPU run short; they change nothing of what is checked.
"""

import argparse
import base64
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

PROMPT = "a black car and a white clock"
BASE = dict(prompt=PROMPT, negative_prompt="", seed=1, steps=4, width=256, height=256, sampler_name="Euler a",
            cfg_scale=7.0, batch_size=1, n_iter=1)
HIRES = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=3, denoising_strength=0.6,
             hr_additional_modules=["Use same choices"])  # Forge's API crashes on hires without the last key
LORA = "tsam_check"
REFS = {  # name -> (endpoint, payload without T-SAM's entry)
    "txt2img": ("txt2img", BASE),
    "hires": ("txt2img", dict(BASE, width=128, height=128, **HIRES)),
    "lora": ("txt2img", dict(BASE, prompt=f"{PROMPT} <lora:{LORA}:1>")),
}
ON = {"enabled": True, "refine": False}  # the fast preset


def call(url: str, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=7200) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:2000].decode(errors='replace')}") from None


def generate(url: str, endpoint: str, payload: dict, tsam=None) -> tuple[list[bytes], dict, float]:
    """(decoded PNGs, info, seconds); ``tsam``: T-SAM's args list, or None for no entry."""
    body = dict(payload)
    if tsam is not None:
        body["alwayson_scripts"] = {"t-sam": {"args": tsam}}
    start = time.perf_counter()
    res = call(url, f"/sdapi/v1/{endpoint}", body)
    return [base64.b64decode(b) for b in res["images"]], json.loads(res["info"]), time.perf_counter() - start


def pixels(png: bytes):
    from PIL import Image
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def tsam_keys(infotext: str) -> dict:
    return dict(re.findall(r"(T-SAM [a-z ]+): (\"[^\"]*\"|[^,\n]*)", infotext))


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def init_image(url: str) -> str:
    images, _, _ = generate(url, "txt2img", dict(BASE, width=192, height=192))
    return base64.b64encode(images[0]).decode()


def refs(url: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, (endpoint, payload) in REFS.items():
        images, _, seconds = generate(url, endpoint, payload)
        with open(os.path.join(out, f"ref_{name}.png"), "wb") as f:
            f.write(images[0])
        print(f"ref {name}: {seconds:.1f} s", flush=True)


def off_equals_absent(url: str, out: str, names, when: str) -> bool:
    ok = True
    for name in names:
        endpoint, payload = REFS[name]
        with open(os.path.join(out, f"ref_{name}.png"), "rb") as f:
            ref = pixels(f.read())
        for label, tsam in (("no entry", None), ("[False]", [False]), ('{"enabled": false}', [{"enabled": False}])):
            images, info, seconds = generate(url, endpoint, payload, tsam)
            same = pixels(images[0]) == ref
            keys = sorted(tsam_keys(info["infotexts"][0])) or "none"
            verdict = "pixel-identical" if same else "DIFFERENT pixels"
            ok &= report(f"off == absent {name} {label} {when}", same and keys == "none",
                         f"{verdict}, T-SAM keys {keys} ({seconds:.1f} s)")
    return ok


def guided(name: str, info: dict, seconds: float, images: int = 1) -> bool:
    texts = info["infotexts"][:images]
    keys = [tsam_keys(t) for t in texts]
    traces = [k.get("T-SAM loss trace") for k in keys]
    problems = [k[m] for k in keys for m in ("T-SAM warning", "T-SAM error") if m in k]
    return report(name, all(traces) and not problems,
                  f"loss trace {traces}{' ' + str(problems) if problems else ''}, keys {len(keys[0])} ({seconds:.1f} s)")


def check(url: str, out: str) -> bool:
    ok = off_equals_absent(url, out, REFS, "(before any guided run)")
    images, info, seconds = generate(url, "txt2img", BASE, [ON])
    ok &= guided("fast preset txt2img", info, seconds)
    with open(os.path.join(out, "ref_txt2img.png"), "rb") as f:
        changed = pixels(images[0]) != pixels(f.read())
    ok &= report("fast preset changes the image", changed, "guided image differs from the unguided one" if changed else "same pixels")
    # one batch of two different prompts: the prompt matrix script (the API's prompt is one string)
    batch = dict(BASE, width=128, height=128, batch_size=2, prompt=f"{PROMPT}|a red apple on a blue table",
                 script_name="prompt matrix", script_args=[False, False, "positive", "comma", 0])
    images, info, seconds = generate(url, "txt2img", batch, [ON])
    traces = [tsam_keys(t).get("T-SAM loss trace") for t in info["infotexts"][-2:]]
    ok &= report("batch of 2 different prompts", len(set(info["all_prompts"])) == 2 and all(traces) and traces[0] != traces[1],
                 f"prompts {info['all_prompts']}, loss traces {traces} ({seconds:.1f} s)")
    images, info, seconds = generate(url, "txt2img", REFS["hires"][1], [dict(ON, hires=True)])
    trace = tsam_keys(info["infotexts"][0]).get("T-SAM loss trace", "")
    ok &= report("hires fix, both passes guided", "(hires)" in trace, f"loss trace {trace!r} ({seconds:.1f} s)")
    i2i = dict(BASE, init_images=[init_image(url)], denoising_strength=0.6, steps=6, width=192, height=192)
    images, info, seconds = generate(url, "img2img", i2i, [ON])
    ok &= guided("img2img", info, seconds)
    images, info, seconds = generate(url, "txt2img", REFS["lora"][1], [ON])
    ok &= guided("LoRA loaded, guided", info, seconds)
    images, info, seconds = generate(url, "txt2img", BASE, [ON])
    ok &= guided("LoRA removed, guided", info, seconds)
    ok &= off_equals_absent(url, out, REFS, "(after guided runs, LoRA loaded and removed)")
    return ok


def models(url: str, names: list[str]) -> bool:
    """A guided txt2img on each checkpoint. A checkpoint stock Forge fails to load ("Failed to
    recognize model type!") leaves it with no model, and choosing the one loaded before does not
    reload it (its loading parameters are those of before the failure): restart the server after."""
    ok = True
    for name in names:
        payload = dict(BASE, width=128, height=128, override_settings={"sd_model_checkpoint": name},
                       override_settings_restore_afterwards=True)
        try:
            images, info, seconds = generate(url, "txt2img", payload, [ON])
        except RuntimeError as e:
            ok &= report(f"checkpoint {name}", False, str(e)[:600])
            continue
        text = info["infotexts"][0]
        model = re.search(r"Model: ([^,]*)", text)
        ok &= guided(f"checkpoint {name} ({model.group(1) if model else '?'})", info, seconds)
    return ok


def lora(path: str) -> None:
    """A rank-4 LoRA (kohya key format) on the latent/4 cross-attention projections of SD 1.5."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    state = {}
    for block in ("input_blocks_7_1", "input_blocks_8_1", "output_blocks_3_1", "output_blocks_4_1", "output_blocks_5_1"):
        for proj, width in (("to_q", 1280), ("to_k", 768), ("to_v", 768)):
            key = f"lora_unet_{block}_transformer_blocks_0_attn2_{proj}"
            state[key + ".lora_down.weight"] = torch.randn(4, width, generator=g) * 0.05
            state[key + ".lora_up.weight"] = torch.randn(1280, 4, generator=g) * 0.05
            state[key + ".alpha"] = torch.tensor(4.0)
    save_file(state, path)
    print(f"wrote {path} ({len(state)} tensors)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7870")
    parser.add_argument("--out", default="webui_check")
    parser.add_argument("what", choices=["refs", "check", "models", "lora"])
    parser.add_argument("names", nargs="*", help="models: checkpoint titles; lora: the file to write")
    args = parser.parse_args(argv)
    if args.what == "lora":
        lora(args.names[0])
        return 0
    if args.what == "refs":
        refs(args.url, args.out)
        return 0
    return 0 if (check(args.url, args.out) if args.what == "check" else models(args.url, args.names)) else 1


if __name__ == "__main__":
    sys.exit(main())
