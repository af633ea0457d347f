"""What T-SAM shows in the WebUI: the T preview of the prompt box, diagnostics figures after the
images (gallery and API, never the grid, saved only when the setting says so), the loss trace."""

import time

import gradio as gr
import pytest
from PIL import Image

from modules import images, shared
from modules.infotext_utils import parse_generation_parameters
from tsam_ext.host import preview


def test_preview_shows_one_panel_per_chunk_and_subprompt(webui):
    titles = [t for t, _ in preview.panels("a cat BREAK a black dog AND a red ball <lora:style:0.8>", 2.5, "paper")]
    assert titles == ["T (sub-prompt 1, chunk 1, gamma 2.5, paper order)", "T (sub-prompt 1, chunk 2, gamma 2.5, paper order)",
                      "T (sub-prompt 2, gamma 2.5, paper order)"]
    one = preview.preview("a black car and a white clock", 3, "reference")
    assert isinstance(one, Image.Image) and [t for t, _ in preview.panels("a black car", 3, "reference")] == [
        "T (gamma 3, reference order)"]
    assert preview.first_step_texts("a [cat:dog:0.5] AND a [red|blue] ball <lora:x:1>") == ["a cat", " a red ball"]


def test_preview_explains_why_it_cannot_run(webui):
    model = shared.sd_model
    try:
        model.is_sd3 = True
        with pytest.raises(gr.Error, match="SD3"):
            preview.preview("a cat", 3, "reference")
    finally:
        model.is_sd3 = False
    with pytest.raises(gr.Error, match="no tokens"):
        preview.preview("", 3, "reference")


def test_preview_of_a_full_chunk_is_interactive(webui):
    prompt = " ".join(["red apple green pear yellow lemon blue plum purple grape orange peach"] * 7)  # 84 tokens
    start = time.perf_counter()
    image = preview.preview(prompt, 3, "reference")
    assert image.width > 75 * 12  # 75 labelled rows and columns
    print(f"preview of {prompt.count(' ') + 1} words: {time.perf_counter() - start:.2f} s")


def test_diagnostics_figures_follow_the_images_and_are_saved_only_on_request(webui):
    images.saved.clear()
    _, res = webui.generate(tsam=dict(enabled=True, diagnostics=True, refine=False), prompt=["a black car and a white clock",
                            "a dog chasing a red ball"], batch_size=2, steps=5)
    assert len(res.images) == 4 and len(res.infotexts) == 4 and len(res.latents) == 2
    assert res.infotexts[2:] == ["T-SAM diagnostics of image 1", "T-SAM diagnostics of image 2"]
    assert all(img.width > 400 for img in res.images[2:]) and not images.saved
    shared.opts.tsam_save_diagnostics = True
    try:
        _, res = webui.generate(tsam=dict(enabled=True, diagnostics=True, refine=False), steps=5)
    finally:
        del shared.opts.data["tsam_save_diagnostics"]
    assert [s["suffix"] for s in images.saved] == ["-tsam"] and images.saved[0]["image"] is res.images[1]


def test_no_figures_without_diagnostics_and_the_trace_is_in_the_infotext(webui, capsys):
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), steps=5)
    assert len(res.images) == 1
    first, last = parse_generation_parameters(res.infotexts[0])["T-SAM loss trace"].split(" -> ")
    out = capsys.readouterr().out
    assert "T-SAM step 1/3: loss" in out and f"image 1: {first} -> {last}" in out
