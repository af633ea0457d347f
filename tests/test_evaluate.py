"""bench/evaluate.py's mechanics on random weights: the standalone path end to end, the WebUI API
path against a fake API server, and the CLIP scoring itself. The scores mean nothing here; what
is checked is that every image is generated, scored, recorded and summarised as it should be."""

import base64
import csv
import importlib.util
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from tsam_ext.core import settings
from tsam_ext.runtime.clip_vocab import clip_tokenizer
from tsam_ext.core.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """On a few shared cores, torch's thread pool spin-waits itself many times slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("evaluate", os.path.join(ROOT, "bench", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random transformers CLIP (32 px images) with the real CLIP BPE vocabulary."""
    directory = str(tmp_path_factory.mktemp("clip"))
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(directory)
    clip_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def scorer(ev, clip_dir):
    return ev.load_clip(clip_dir, None, "cpu")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def summary_table(text):
    """{set: cells} from summary.md's markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| set ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def check_summary(table, rows):
    """Each summary line equals the means and win rates recomputed from the CSV rows."""
    pairs = {}
    for r in rows:
        pairs.setdefault((r["set"], r["index"], r["seed"]), {})[r["variant"]] = r
    assert all(set(v) == {"baseline", "tsam"} for v in pairs.values())
    assert set(table) == {k[0] for k in pairs} | {"all"}
    for group, cells in table.items():
        members = [v for k, v in pairs.items() if group in ("all", k[0])]
        assert int(cells[0]) == len(members)
        for offset, metric in ((1, "clip_score"), (5, "min_object_score")):
            base = np.array([float(p["baseline"][metric]) for p in members])
            tsam = np.array([float(p["tsam"][metric]) for p in members])
            win = 100 * ((tsam > base) + 0.5 * (tsam == base)).mean()
            expected = (base.mean(), tsam.mean(), (tsam - base).mean())
            got = [float(c) for c in cells[offset:offset + 3]]
            assert np.allclose(got, expected, atol=0.0051), (group, metric, got, expected)
            assert float(cells[offset + 3].rstrip("%")) == pytest.approx(win, abs=0.051)


def first_prompts(name, n):
    with open(os.path.join(ROOT, "bench", "prompts", f"{name}.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()[:n]]


# ---- (1) standalone pipeline, end to end ---------------------------------------------------------

def test_standalone_end_to_end(ev, clip_dir, scorer, tmp_path, capsys):
    out = tmp_path / "out"
    rows = ev.main(["--clip", clip_dir, "--model-channels", "32", "--steps", "2", "--width", "64", "--height", "64",
                    "--no-refine", "--sets", "ae_animals", "ae_objects", "--limit", "1", "--seeds", "7",
                    "--batch-size", "2", "--save-images", "--device", "cpu", "--out", str(out)])
    columns, csv_rows = read_csv(out / "results.csv")
    assert tuple(columns) == ev.COLUMNS
    assert [{k: str(v) if v is not None else "" for k, v in r.items()} for r in rows] == csv_rows
    expected = {("ae_animals", first_prompts("ae_animals", 1)[0]), ("ae_objects", first_prompts("ae_objects", 1)[0])}
    assert {(r["set"], r["prompt"]) for r in csv_rows} == expected
    assert sorted((r["set"], r["index"], r["seed"], r["variant"]) for r in csv_rows) == sorted(
        (s, "0", "7", v) for s in ("ae_animals", "ae_objects") for v in ("baseline", "tsam"))

    images = {}
    for r in csv_rows:
        image = Image.open(out / r["image"])
        assert image.size == (64, 64)
        images[r["set"], r["variant"]] = np.asarray(image)
        prompt = next(p for p in ev.load_set(r["set"], limit=1))
        clip, min_object = scorer.score([image], [prompt])[0]
        assert float(r["clip_score"]) == pytest.approx(clip, abs=2e-4)  # the saved image is the scored one
        assert float(r["min_object_score"]) == pytest.approx(min_object, abs=2e-4)
    assert any((images[s, "baseline"] != images[s, "tsam"]).any() for s in ("ae_animals", "ae_objects")), \
        "T-SAM changed no image: the 'tsam' variant did not run T-SAM"

    summary = (out / "summary.md").read_text()
    assert ev.RANDOM_WEIGHTS in summary
    check_summary(summary_table(summary), csv_rows)
    assert summary.strip() in capsys.readouterr().out


def test_summary_ties_half_and_unpaired_rows_out(ev):
    def row(index, variant, clip, min_object):
        return dict(set="ae_animals", index=index, seed=0, variant=variant, clip_score=clip,
                    min_object_score=min_object)

    rows = [row(0, "baseline", 30.0, 20.0), row(0, "tsam", 31.0, 20.0),
            row(1, "baseline", 30.0, 22.0), row(1, "tsam", 29.0, 21.0),
            row(2, "baseline", 99.0, 99.0)]  # no T-SAM image: not a pair
    line = ev.summarize(rows)[0]
    assert line["pairs"] == 2
    assert line["clip_score"] == dict(baseline=30.0, tsam=30.0, diff=0.0, win=0.5)
    assert line["min_object_score"] == dict(baseline=21.0, tsam=20.5, diff=-0.5, win=0.25)


# ---- (2) the WebUI API path, against a fake API --------------------------------------------------

class FakeWebUI(BaseHTTPRequestHandler):
    """/sdapi/v1/txt2img that checks T-SAM's args and answers with small PNGs and an infotext."""
    expected_tsam: dict = {}
    mode = "ok"  # "no_marker": T-SAM silently not applied
    requests: list = []

    def problem(self, body):
        if self.path != "/sdapi/v1/txt2img":
            return f"path {self.path}"
        for key, kind in (("prompt", str), ("seed", int), ("steps", int), ("width", int), ("height", int),
                          ("cfg_scale", (int, float)), ("sampler_name", str)):
            if not isinstance(body.get(key), kind):
                return f"{key}: {body.get(key)!r}"
        scripts = body.get("alwayson_scripts")
        if not isinstance(scripts, dict) or list(scripts) != ["T-SAM"] or list(scripts["T-SAM"]) != ["args"]:
            return f"alwayson_scripts: {scripts!r}"
        args = scripts["T-SAM"]["args"]
        if args not in ([{"enabled": False}], [self.expected_tsam]):
            return f"T-SAM args: {args!r}"
        return None

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problem = self.problem(body)
        if problem:
            return self.answer(422, {"detail": problem})
        FakeWebUI.requests.append(body)
        tsam = body["alwayson_scripts"]["T-SAM"]["args"][0]["enabled"]
        text = f"{body['prompt']}\nSteps: {body['steps']}, Seed: {body['seed']}"
        if tsam and self.mode != "no_marker":
            text += ", T-SAM gamma: 2.5, T-SAM alpha: 5"
        self.answer(200, {"images": [base64.b64encode(fake_png(body, tsam)).decode()], "parameters": body,
                          "info": json.dumps({"infotexts": [text], "seed": body["seed"]})})

    def answer(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def fake_png(body, tsam):
    """A PNG that depends on the prompt, seed and variant."""
    rng = np.random.default_rng([body["seed"], int(tsam), len(body["prompt"])])
    image = Image.fromarray(rng.integers(0, 256, (body["height"], body["width"], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fake_api():
    FakeWebUI.requests, FakeWebUI.mode = [], "ok"
    FakeWebUI.expected_tsam = {"enabled": True, "gamma": 2.5, "alpha": 5.0, "guided_steps": 40, "refine": True,
                               "text_encoder": "both"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWebUI)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def api_args(url, clip_dir, out):
    return ["--api", url, "--clip", clip_dir, "--sets", "ae_objects", "--limit", "2", "--n-seeds", "2", "--steps", "3",
            "--width", "64", "--height", "48", "--gamma", "2.5", "--guided-steps", "40", "--save-images",
            "--device", "cpu", "--out", str(out)]


def test_api_end_to_end(ev, clip_dir, fake_api, tmp_path):
    out = tmp_path / "out"
    ev.main(api_args(fake_api + "/", clip_dir, out))
    prompts = first_prompts("ae_objects", 2)
    sent = FakeWebUI.requests
    assert len(sent) == 2 * 2 * 2
    assert all((b["steps"], b["width"], b["height"], b["cfg_scale"], b["sampler_name"]) == (3, 64, 48, 7.5, "DPM++ 2M")
               for b in sent)
    variants = {}
    for b in sent:
        variants.setdefault((b["prompt"], b["seed"]), []).append(b["alwayson_scripts"]["T-SAM"]["args"][0]["enabled"])
    assert variants == {(p, s): [False, True] for p in prompts for s in (0, 1)}
    # What the script's own API parsing makes of the args sent.
    assert {settings.from_args(b["alwayson_scripts"]["T-SAM"]["args"]) for b in sent} == {
        Settings(enabled=False), Settings(enabled=True, gamma=2.5, guided_steps=40)}

    columns, rows = read_csv(out / "results.csv")
    assert tuple(columns) == ev.COLUMNS and len(rows) == 8
    for r in rows:  # the image written and scored is the one the API returned
        body = dict(prompt=r["prompt"], seed=int(r["seed"]), width=64, height=48)
        served = np.asarray(Image.open(io.BytesIO(fake_png(body, r["variant"] == "tsam"))))
        assert (np.asarray(Image.open(out / r["image"])) == served).all()
    summary = (out / "summary.md").read_text()
    assert ev.RANDOM_WEIGHTS not in summary
    check_summary(summary_table(summary), rows)


@pytest.mark.parametrize("mode, message", [("no_marker", "T-SAM was not applied"), ("bad_args", "answered 422")])
def test_api_failures_stop_the_run(ev, clip_dir, fake_api, tmp_path, mode, message):
    FakeWebUI.mode = mode
    if mode == "bad_args":
        FakeWebUI.expected_tsam = {"enabled": True}
    with pytest.raises(ev.EvaluationError, match=message):
        ev.main(api_args(fake_api, clip_dir, tmp_path / "out"))


# ---- (3) scoring ----------------------------------------------------------------------------------

def noise_image(seed, size=(40, 56)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_scores_depend_on_the_prompt_and_are_consistent(ev, scorer):
    own = ev.Prompt("t", 0, "a dog and a frog", ("a dog", "a frog"))
    other = ev.Prompt("t", 1, "a pink crown and a purple bow", ("a pink crown", "a purple bow"))
    image, image2 = noise_image(0), noise_image(1)
    (clip_own, min_own), = scorer.score([image], [own])
    (clip_other, _), = scorer.score([image], [other])
    assert clip_own != pytest.approx(clip_other, abs=1e-3)
    # Batched and cached scoring gives each image its own prompt's scores.
    batched = np.array(scorer.score([image2, image], [other, own]))
    assert np.allclose(batched, np.array(scorer.score([image2], [other]) + [(clip_own, min_own)]), atol=1e-4)
    objects = [scorer.score([image], [ev.Prompt("t", 0, text, ())])[0][0] for text in own.objects]
    assert min_own == pytest.approx(min(objects), abs=1e-4)
    assert scorer.score([image], [ev.Prompt("t", 0, "a dog", ())]) == [(pytest.approx(objects[0], abs=1e-4), None)]


def test_preprocessing(ev):
    image = noise_image(3)
    a, b = ev.preprocess(image, 32), ev.preprocess(image.copy(), 32)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    mean, std = torch.tensor(ev.CLIP_MEAN).view(3, 1), torch.tensor(ev.CLIP_STD).view(3, 1)
    # Centre crop: a 96x32 image keeps only its middle third.
    stripes = np.zeros((32, 96, 3), dtype=np.uint8)
    stripes[:, :32] = (255, 0, 0)
    stripes[:, 32:64] = (0, 128, 255)
    stripes[:, 64:] = (0, 0, 255)
    x = ev.preprocess(Image.fromarray(stripes), 32).reshape(3, -1)
    assert torch.allclose(x, (torch.tensor([0, 128, 255]).view(3, 1) / 255 - mean) / std, atol=1e-6)
    # Shortest side to the model's size: a flat 64x128 image stays flat, normalised.
    flat = ev.preprocess(Image.new("RGB", (64, 128), (10, 200, 90)), 32).reshape(3, -1)
    assert torch.allclose(flat, (torch.tensor([10, 200, 90]).view(3, 1) / 255 - mean) / std, atol=1e-2)


def test_prompt_sets_objects(ev):
    animals_objects = ev.load_set("ae_animals_objects")
    assert len(animals_objects) == 144
    by_text = {p.text: p.objects for p in animals_objects}
    assert by_text["a monkey and a red car"] == ("a monkey", "a red car")
    assert by_text["a horse with a glasses"] == ("a horse", "a glasses")
    assert ev.load_set("ae_objects", limit=1)[0].objects == ("a pink crown", "a purple bow")
