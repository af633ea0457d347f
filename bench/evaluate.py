"""With/without T-SAM on the Attend-and-Excite prompt sets, scored with CLIP, in one command.

Every prompt of the chosen sets is generated once per seed without T-SAM ("baseline") and once
with it ("tsam"), from the same seed, either by the standalone pipeline (``--ckpt`` with
``--arch`` sd1, sd2, sd2-v or sdxl) or by a running WebUI's API (``--api``, whatever checkpoint
it has loaded). Each image is scored against its prompt with CLIP:

* CLIP score: 100 x cosine(image embedding, prompt embedding);
* min-object score: Attend-and-Excite's "minimum object similarity", the lower of the CLIP
  scores of the prompt's objects on their own ("a red car", "a frog"), from the sets'
  ``*_token_index.json``. It drops when an object is missing, which the full prompt hides.

Writes ``results.csv`` (one row per prompt x seed x variant) and ``summary.md`` (per set and
overall: mean scores with and without T-SAM, their difference, and how often T-SAM scored higher
on the same prompt and seed) into ``--out``, and prints the summary. Nothing is downloaded.

    python bench/evaluate.py --ckpt v1-5-pruned-emaonly.safetensors --clip clip-vit-base-patch16/
    python bench/evaluate.py --arch sdxl --ckpt sd_xl_base_1.0.safetensors --alpha 2.5 --clip clip-vit-base-patch16/
    python bench/evaluate.py --api http://127.0.0.1:7860 --clip ViT-B-16.pt --clip-arch ViT-B-16
"""

import argparse
import base64
import csv
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, Python puts bench/ on the path, not the repository
    sys.path.insert(0, ROOT)

from tsam_ext.core import infotext  # noqa: E402
from tsam_ext.runtime import models, pipeline  # noqa: E402
from tsam_ext.runtime.model import use_sdpa  # noqa: E402
from tsam_ext.core.settings import BY_NAME, Settings, SettingsError  # noqa: E402

PROMPTS_DIR = os.path.join(ROOT, "bench", "prompts")
SETS = ("ae_animals", "ae_animals_objects", "ae_objects")
VARIANTS = ("baseline", "tsam")
COLUMNS = ("set", "index", "prompt", "seed", "variant", "clip_score", "min_object_score", "image")
API_FIELDS = ("enabled", "gamma", "alpha", "guided_steps", "refine", "text_encoder")  # what the command line controls
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_WEIGHTS = ("!!! No --ckpt: Stable Diffusion has RANDOM weights. The images are noise and every score "
                  "is MEANINGLESS; this run only exercises the mechanics. Pass --ckpt or --api for real numbers. !!!")


class EvaluationError(RuntimeError):
    """The run cannot go on or its comparison would be void; the message says why."""


@dataclass(frozen=True)
class Prompt:
    set: str
    index: int
    text: str
    objects: tuple[str, ...]  # "a red car", "a frog": the prompt's objects on their own


def object_texts(words: dict[str, str]) -> tuple[str, ...]:
    """Sub-prompts as Attend-and-Excite splits a prompt: each noun with its adjective, if any."""
    objects, k = [], 1
    while f"noun{k}" in words:
        objects.append(" ".join(["a", words[f"adj{k}"], words[f"noun{k}"]] if f"adj{k}" in words
                                else ["a", words[f"noun{k}"]]))
        k += 1
    return tuple(objects)


def load_set(name: str, directory: str = PROMPTS_DIR, limit: int | None = None) -> list[Prompt]:
    """The first ``limit`` prompts of ``name``.txt with their objects from ``name``_token_index.json."""
    with open(os.path.join(directory, f"{name}.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line in f.read().splitlines()]
    with open(os.path.join(directory, f"{name}_token_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    if len(index) != len(lines):
        raise ValueError(f"{name}: {len(lines)} prompts but {len(index)} token-index entries")
    return [Prompt(name, i, text, object_texts(index[str(i)][0])) for i, text in enumerate(lines[:limit])]


# ---- CLIP scoring -------------------------------------------------------------------------------

def preprocess(image: Image.Image, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """[3, size, size]: CLIP's transform on a PIL image (shortest side to ``size``, bicubic; centre
    crop; normalise), computed as torchvision's Resize/CenterCrop do, without torchvision."""
    image = image.convert("RGB")
    w, h = image.size
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ClipScorer:
    """CLIP similarities x100 between images and texts, over any CLIP's two encoders."""

    def __init__(self, encode_image, encode_text, image_size: int, mean=CLIP_MEAN, std=CLIP_STD,
                 device="cpu", name: str = "CLIP"):
        self.encode_image, self.encode_text = encode_image, encode_text
        self.image_size, self.mean, self.std, self.device, self.name = image_size, mean, std, device, name
        self._texts: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([preprocess(im, self.image_size, self.mean, self.std) for im in images]).to(self.device)
        return torch.nn.functional.normalize(self.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Normalised embeddings; each text is encoded once per run (prompts repeat over seeds)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if new:
            self._texts.update(zip(new, torch.nn.functional.normalize(self.encode_text(new).float(), dim=-1)))
        return torch.stack([self._texts[t] for t in texts])

    def score(self, images: list[Image.Image], prompts: list[Prompt]) -> list[tuple[float, float | None]]:
        """(CLIP score, min-object score or None without objects) of image i against prompt i."""
        scores = []
        for prompt, image in zip(prompts, self.image_features(images)):
            sims = (100 * self.text_features([prompt.text, *prompt.objects]) @ image).tolist()
            scores.append((sims[0], min(sims[1:]) if prompt.objects else None))
        return scores


def load_hf_clip(directory: str, device) -> ClipScorer:
    """A transformers CLIP model directory (``CLIPModel.save_pretrained``), from local files only."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(directory, local_files_only=True).to(device).eval()
    has_tokenizer = any(os.path.exists(os.path.join(directory, f)) for f in ("vocab.json", "tokenizer.json"))
    if has_tokenizer:
        tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    else:  # every OpenAI CLIP shares SD1.x's BPE vocabulary, which we can build offline
        from tsam_ext.runtime.clip_vocab import clip_tokenizer
        tokenizer = clip_tokenizer()
    length = model.config.text_config.max_position_embeddings
    mean, std = CLIP_MEAN, CLIP_STD
    preprocessor = os.path.join(directory, "preprocessor_config.json")
    if os.path.exists(preprocessor):
        with open(preprocessor, encoding="utf-8") as f:
            config = json.load(f)
        mean, std = tuple(config.get("image_mean", mean)), tuple(config.get("image_std", std))

    def encode_text(texts):
        tokens = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return model.get_text_features(input_ids=tokens.input_ids.to(device),
                                       attention_mask=tokens.attention_mask.to(device))

    return ClipScorer(lambda x: model.get_image_features(pixel_values=x), encode_text,
                      model.config.vision_config.image_size, mean, std, device, f"transformers CLIP {directory}")


def load_open_clip(arch: str, path: str, device) -> ClipScorer:
    """An open_clip checkpoint file for architecture ``arch`` (needs open_clip, so torchvision)."""
    try:
        import open_clip
    except ImportError as e:
        raise SystemExit(f"--clip {path} is a file, which needs open_clip, and open_clip does not import ({e}). "
                         "Pass a transformers CLIP model directory instead.") from None
    config = open_clip.get_model_config(arch)
    if config is None:
        raise SystemExit(f"--clip-arch {arch!r} is not an open_clip architecture; e.g. ViT-B-32, ViT-B-16, ViT-L-14")
    if {"hf_model_name", "hf_tokenizer_name"} & set(config.get("text_cfg", {})):
        raise SystemExit(f"{arch} needs a Hugging Face text tower or tokenizer, which would be downloaded; "
                         "pass a transformers CLIP model directory instead")
    # An absolute path can never be taken for a pretrained tag (which open_clip would download).
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=os.path.abspath(path), device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipScorer(model.encode_image, lambda texts: model.encode_text(tokenizer(texts).to(device)), size,
                      tuple(model.visual.image_mean), tuple(model.visual.image_std), device, f"open_clip {arch} {path}")


def load_clip(path: str, arch: str | None, device) -> ClipScorer:
    """A directory is a transformers CLIP; a file is an open_clip checkpoint (``arch`` required)."""
    if os.path.isdir(path):
        return load_hf_clip(path, device)
    if not os.path.isfile(path):
        raise SystemExit(f"--clip {path}: no such file or directory")
    if not arch:
        raise SystemExit(f"--clip {path} is an open_clip checkpoint file: say its architecture with --clip-arch")
    return load_open_clip(arch, path, device)


# ---- generation ---------------------------------------------------------------------------------

def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in 0..1 to 8 bits as the WebUI saves it (scaled, truncated)."""
    array = (255.0 * image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()).astype(np.uint8)
    return Image.fromarray(array)


class Standalone:
    """Images from ``tsam_ext.runtime.pipeline.generate`` on a model of ``runtime.models`` in this process."""

    def __init__(self, model, tsam: Settings, steps: int, cfg_scale: float, width: int, height: int,
                 sampler: str, verbose: bool = False):
        self.model, self.tsam = model, tsam
        self.options = dict(steps=steps, cfg_scale=cfg_scale, width=width, height=height, sampler=sampler)
        self.log = (lambda message: print(message, file=sys.stderr)) if verbose else (lambda message: None)

    def __call__(self, texts: list[str], seed: int, variant: str) -> list[Image.Image]:
        settings = self.tsam if variant == "tsam" else Settings(enabled=False)
        result = pipeline.generate(self.model, texts, [seed] * len(texts), settings, log=self.log, **self.options)
        for warning in result.guided.warnings if result.guided else []:
            print(f"T-SAM warning (seed {seed}, {texts}): {warning}", file=sys.stderr)
        return [to_pil(image) for image in result.images]


class WebUIAPI:
    """Images from a running WebUI's ``/sdapi/v1/txt2img``, one request per image."""

    def __init__(self, url: str, tsam: Settings, steps: int, cfg_scale: float, width: int, height: int,
                 sampler: str, auth: str | None = None, timeout: float = 600):
        self.url = url.rstrip("/") + "/sdapi/v1/txt2img"
        self.tsam_args = {name: getattr(tsam, name) for name in API_FIELDS}
        self.options = dict(steps=steps, width=width, height=height, cfg_scale=cfg_scale, sampler_name=sampler)
        self.headers = {"Content-Type": "application/json"}
        if auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        self.timeout = timeout
        # No proxies: the requests go to the URL the user gave and nowhere else.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def payload(self, prompt: str, seed: int, variant: str) -> dict:
        args = self.tsam_args if variant == "tsam" else {"enabled": False}
        return dict(prompt=prompt, seed=seed, **self.options, alwayson_scripts={"T-SAM": {"args": [args]}})

    def post(self, payload: dict) -> dict:
        request = urllib.request.Request(self.url, json.dumps(payload).encode(), self.headers, method="POST")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise EvaluationError(f"{self.url} answered {e.code}: {e.read().decode(errors='replace')[:1000]}") from None
        except urllib.error.URLError as e:
            raise EvaluationError(f"cannot reach {self.url} ({e.reason}); is the WebUI running with --api?") from None

    def __call__(self, texts: list[str], seed: int, variant: str) -> list[Image.Image]:
        images = []
        for text in texts:
            response = self.post(self.payload(text, seed, variant))
            check_infotext(json.loads(response["info"])["infotexts"][0], variant, text, seed)
            images.append(Image.open(io.BytesIO(base64.b64decode(response["images"][0]))).convert("RGB"))
        return images


def check_infotext(text: str, variant: str, prompt: str, seed: int) -> None:
    """A comparison is void if T-SAM did not run where asked, or ran where not: fail loudly."""
    where = f"{prompt!r}, seed {seed}"
    if infotext.ERROR in text:
        raise EvaluationError(f"T-SAM failed on {where}, the image is unguided: {text}")
    if (infotext.MARKER in text) != (variant == "tsam"):
        state = "not applied" if variant == "tsam" else "applied to the baseline"
        raise EvaluationError(f"T-SAM was {state} on {where} (is the extension installed and up to date?): {text}")


# ---- the run ------------------------------------------------------------------------------------

def save_image(image: Image.Image, out_dir: str, prompt: Prompt, seed: int, variant: str) -> str:
    """Save as ``out_dir/images/SET/INDEX_seedSEED_VARIANT.png``; return the path relative to ``out_dir``."""
    path = os.path.join("images", prompt.set, f"{prompt.index:03d}_seed{seed}_{variant}.png")
    os.makedirs(os.path.join(out_dir, "images", prompt.set), exist_ok=True)
    image.save(os.path.join(out_dir, path))
    return path


def run(generator, scorer: ClipScorer, prompts: list[Prompt], seeds: list[int], out_dir: str,
        save_images: bool = False, batch_size: int = 1) -> list[dict]:
    """Generate and score every prompt x seed x variant; rows go to ``results.csv`` as they come."""
    rows, total, done = [], len(prompts) * len(seeds) * len(VARIANTS), 0
    with open(os.path.join(out_dir, "results.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for seed in seeds:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                for variant in VARIANTS:
                    began = time.time()
                    images = generator([p.text for p in batch], seed, variant)
                    for prompt, image, (full, objects) in zip(batch, images, scorer.score(images, batch)):
                        path = save_image(image, out_dir, prompt, seed, variant) if save_images else ""
                        # Rounded here so that the summary is computed from exactly what the CSV holds.
                        row = dict(set=prompt.set, index=prompt.index, prompt=prompt.text, seed=seed,
                                   variant=variant, clip_score=round(full, 4),
                                   min_object_score=None if objects is None else round(objects, 4), image=path)
                        writer.writerow(row)
                        rows.append(row)
                        done += 1
                        print(f"[{done}/{total}] {prompt.set} #{prompt.index} seed {seed} {variant}: CLIP "
                              f"{full:.2f}, min-object {'-' if objects is None else f'{objects:.2f}'} "
                              f"({time.time() - began:.1f} s)", file=sys.stderr)
                    f.flush()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per set, then "all": means without/with T-SAM, difference, and T-SAM's win rate over the
    (prompt, seed) pairs that have both variants (a tie counts half)."""
    pairs: dict[tuple, dict] = {}
    for row in rows:
        pairs.setdefault((row["set"], row["index"], row["seed"]), {})[row["variant"]] = row
    pairs = {k: v for k, v in pairs.items() if set(v) == set(VARIANTS)}
    groups = [name for name in SETS if any(k[0] == name for k in pairs)] + ["all"]
    lines = []
    for group in groups:
        members = [v for k, v in pairs.items() if group in ("all", k[0])]
        line = {"set": group, "pairs": len(members)}
        for metric in ("clip_score", "min_object_score"):
            both = [(p["baseline"][metric], p["tsam"][metric]) for p in members
                    if p["baseline"][metric] is not None and p["tsam"][metric] is not None]
            base, tsam = np.array([b for b, _ in both]), np.array([t for _, t in both])
            line[metric] = None if not both else dict(
                baseline=float(base.mean()), tsam=float(tsam.mean()), diff=float((tsam - base).mean()),
                win=float(((tsam > base) + 0.5 * (tsam == base)).mean()))
        lines.append(line)
    return lines


def format_summary(lines: list[dict]) -> str:
    """A markdown table of ``summarize``'s lines."""
    header = ("| set | pairs | CLIP w/o | CLIP T-SAM | CLIP diff | CLIP T-SAM wins "
              "| min-obj w/o | min-obj T-SAM | min-obj diff | min-obj T-SAM wins |")
    out = [header, "|" + "---|" * (header.count("|") - 1)]
    for line in lines:
        cells = [line["set"], str(line["pairs"])]
        for metric in ("clip_score", "min_object_score"):
            m = line[metric]
            cells += ["-"] * 4 if m is None else [f"{m['baseline']:.2f}", f"{m['tsam']:.2f}", f"{m['diff']:+.2f}",
                                                  f"{100 * m['win']:.1f}%"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def describe(args, tsam: Settings) -> list[str]:
    """The run's parameters, for the top of the summary."""
    source = (f"WebUI API {args.api}" if args.api else f"standalone {args.arch}, checkpoint {args.ckpt}" if args.ckpt
              else f"standalone {args.arch}, RANDOM weights (model_channels {args.model_channels})")
    return [f"- images: {source}; {args.sampler}, {args.steps} steps, CFG {args.cfg_scale:g}, "
            f"{args.width}x{args.height}, seeds {' '.join(map(str, args.seeds))}",
            f"- T-SAM: gamma {tsam.gamma:g}, alpha {tsam.alpha:g}, guided steps {tsam.guided_steps}%, "
            f"refinement {'on' if tsam.refine else 'off'}, text encoder {tsam.text_encoder} (SDXL only)",
            f"- scores: 100 x CLIP cosine ({args.clip_name}); min-object = lowest score of the prompt's objects "
            "alone (Attend-and-Excite); wins = share of (prompt, seed) pairs where T-SAM scored higher, ties half"]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate the Attend-and-Excite prompt sets with and without T-SAM from the same seeds "
                    "and compare their CLIP scores. Writes results.csv and summary.md to --out.",
        epilog="examples:\n  python bench/evaluate.py --ckpt sd-v1-4.safetensors --clip clip-vit-base-patch16/\n"
               "  python bench/evaluate.py --api http://127.0.0.1:7860 --clip ViT-B-16.pt --clip-arch ViT-B-16 "
               "--sets ae_animals --limit 10 --n-seeds 4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_argument_group("images (one of)")
    source.add_argument("--ckpt", metavar="PATH", help="a .safetensors/.ckpt of the --arch family for the standalone "
                        "pipeline; without it (and without --api) the model has random weights and the scores mean nothing")
    source.add_argument("--arch", default="sd1", choices=models.ARCHES,
                        help="the standalone model's family (default sd1; sd2-v is SD 2.x 768-v)")
    source.add_argument("--api", metavar="URL", help="a running WebUI started with --api and T-SAM installed, "
                        "e.g. http://127.0.0.1:7860; its selected checkpoint makes the images")
    source.add_argument("--api-auth", metavar="USER:PASSWORD", help="credentials of a WebUI started with --api-auth")
    source.add_argument("--api-timeout", type=float, default=600, metavar="S", help="seconds per request (default 600)")
    source.add_argument("--model-channels", type=positive, default=320, metavar="N",
                        help="UNet width of the random-weights model (smaller for smoke tests; default 320)")
    clip = p.add_argument_group("scoring")
    clip.add_argument("--clip", required=True, metavar="PATH",
                      help="CLIP weights: a transformers CLIP model directory, or an open_clip checkpoint file "
                           "(with --clip-arch; needs open_clip). Nothing is downloaded")
    clip.add_argument("--clip-arch", metavar="NAME", help="open_clip architecture of a --clip file, e.g. ViT-B-32")
    run_ = p.add_argument_group("prompts and seeds")
    run_.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="prompt sets (default: all)")
    run_.add_argument("--limit", type=positive, metavar="N", help="only the first N prompts of each set")
    seeds = run_.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="seeds (default: 0 1 2)")
    seeds.add_argument("--n-seeds", type=positive, metavar="N", help="seeds 0 .. N-1")
    gen = p.add_argument_group("sampling")
    gen.add_argument("--steps", type=positive, default=50, help="sampling steps (default 50, as Attend-and-Excite)")
    gen.add_argument("--cfg-scale", type=float, default=7.5, help="default 7.5")
    gen.add_argument("--width", type=positive, help="pixels, a multiple of 8 (default: the --arch family's own, "
                     "512 / 768 for sd2-v / 1024 for sdxl; 512 through --api, so say 1024 for an SDXL WebUI)")
    gen.add_argument("--height", type=positive, help="pixels, a multiple of 8 (default as --width)")
    gen.add_argument("--sampler", default="DPM++ 2M", help="WebUI sampler name (default DPM++ 2M)")
    gen.add_argument("--batch-size", type=positive, default=1, help="prompts per standalone generation (default 1; "
                     "with an ancestral sampler the images then depend on the batch)")
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="for the standalone model and CLIP (default: cuda if available)")
    tsam = p.add_argument_group("T-SAM (the 'tsam' variant; the baseline has T-SAM off)")
    for name in ("gamma", "alpha", "guided_steps"):
        f = BY_NAME[name]
        tsam.add_argument("--" + name.replace("_", "-"), type=f.kind, default=f.default,
                          help=f"{f.help} (default {f.default:g})".replace("%", "%%"))
    f = BY_NAME["text_encoder"]
    tsam.add_argument("--text-encoder", default=f.default, choices=f.choices, help=f"{f.help} (default {f.default})")
    tsam.add_argument("--no-refine", action="store_true", help="no iterative refinement (faster; not the reference)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="eval_out", metavar="DIR",
                     help="where results.csv, summary.md and the images go (default eval_out)")
    out.add_argument("--save-images", action="store_true", help="also save every image as DIR/images/SET/*.png")
    out.add_argument("--verbose", action="store_true", help="print T-SAM's loss at every guided step")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser()
    args = p.parse_args(argv)
    if args.api and args.ckpt:
        p.error("--ckpt and --api exclude each other: the WebUI uses its own selected checkpoint")
    args.seeds = list(dict.fromkeys(args.seeds or range(args.n_seeds or 3)))  # a repeated seed would void its pairs
    size = 512 if args.api else models.DEFAULT_SIZE[args.arch]
    args.width, args.height = args.width or args.height or size, args.height or args.width or size
    if args.width % 8 or args.height % 8:
        p.error("--width and --height must be multiples of 8 (the latent is 1/8 of the image)")
    if args.api and args.batch_size != 1:
        p.error("--batch-size is for the standalone pipeline; the API gets one request per image")
    if not args.api and args.sampler not in pipeline.SAMPLERS:
        p.error(f"--sampler {args.sampler!r}: the standalone pipeline has {', '.join(pipeline.SAMPLERS)}")
    try:
        tsam = Settings(enabled=True).updated(gamma=args.gamma, alpha=args.alpha, guided_steps=args.guided_steps,
                                              refine=not args.no_refine, text_encoder=args.text_encoder)
    except SettingsError as e:
        p.error(str(e))
    random_weights = not args.api and not args.ckpt
    if random_weights:
        print(RANDOM_WEIGHTS, file=sys.stderr)

    scorer = load_clip(args.clip, args.clip_arch, args.device)  # before any generation: fail fast
    args.clip_name = scorer.name
    options = dict(steps=args.steps, cfg_scale=args.cfg_scale, width=args.width, height=args.height,
                   sampler=args.sampler)
    if args.api:
        generator = WebUIAPI(args.api, tsam, auth=args.api_auth, timeout=args.api_timeout, **options)
    else:
        model = (models.load_checkpoint(args.arch, args.ckpt) if args.ckpt
                 else models.build(args.arch, model_channels=args.model_channels))
        generator = Standalone(use_sdpa(model.to(args.device)), tsam, verbose=args.verbose, **options)

    prompts = [prompt for name in args.sets for prompt in load_set(name, limit=args.limit)]
    os.makedirs(args.out, exist_ok=True)
    rows = run(generator, scorer, prompts, args.seeds, args.out, args.save_images, args.batch_size)

    summary = "\n".join(["# T-SAM evaluation", ""] + ([f"**{RANDOM_WEIGHTS}**", ""] if random_weights else [])
                        + describe(args, tsam) + ["", format_summary(summarize(rows)), ""])
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary)
    print(summary)
    if random_weights:
        print(RANDOM_WEIGHTS, file=sys.stderr)
    return rows


if __name__ == "__main__":
    try:
        main()
    except EvaluationError as e:
        sys.exit(f"evaluate.py: error: {e}")
