"""T-SAM in the WebUI stand-in on SD 2.x (768-v) and SDXL: text targets from the WebUI's own
wrappers against independent computations, the "Text encoder for T" setting, textual inversion
per encoder, --medvram's device hooks, dict conds, every kind of pass, off == absent, the
refused model types, the preview and the X/Y/Z axis."""

import pytest
import torch

import independent
import webui as w
from modules import lowvram, processing, prompt_parser, scripts, sd_hijack, shared
from modules.infotext_utils import parse_generation_parameters
from tsam_ext.core import controller, infotext
from tsam_ext.families.open_clip import pad_after_end
from tsam_ext.host.a1111 import text

PROMPT = "a black car and a white clock"
REAL_GUIDE = controller.GuidedPass.guide


def targets(sd_model, prompt=PROMPT, choice="both", warn=print):
    return text.TextTargets(sd_model, 3.0, "reference", choice, warn=warn)[prompt]


def spy_guided(monkeypatch):
    """[(step, rows as (image, chunk n's), the UNet its recorder reads)] of every guided step."""
    seen = []

    def spy(self, x, step, rows, *args):
        seen.append((step, [(r.image, tuple(c.n for c in r.chunks)) for r in rows], self.recorder.unet, shared.sd_model))
        return REAL_GUIDE(self, x, step, rows, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    return seen


def run(webui, tsam=None, **kwargs):
    defaults = dict(prompt=PROMPT, seed=1, steps=4, width=64, height=64, sampler_name="Euler")
    return webui.generate(tsam=dict(enabled=True, refine=False) | (tsam or {}), **(defaults | kwargs))


def test_sd2_target_is_open_clips_every_block_on_the_webuis_ids(webui, on_model, standins, small_sd2):
    sd_model = on_model(standins["sd2"])
    cm = sd_model.cond_stage_model
    chunk = cm.tokenize_line(PROMPT)[0][0]
    ids = pad_after_end(torch.tensor([chunk.tokens]), cm.id_end, cm.id_pad)
    assert ids[0, 9:].eq(0).all() and ids[0, 8] == 49407  # <sot> + 7 tokens + <eot>, then the WebUI's pad 0
    with torch.no_grad():
        att = independent.open_clip_attention(small_sd2.cond_stage_model.model, ids)  # the pristine tower
    got = targets(sd_model)
    assert [c.n for c in got] == [7] and got[0].labels == ("a", "black", "car", "and", "a", "white", "clock")
    torch.testing.assert_close(got[0].t, independent.text_target(att[0], 7, 3.0, "reference").float(), atol=1e-6, rtol=1e-5)


def test_sdxl_target_is_the_mean_of_both_encoders(webui, on_model, standins, small_sdxl):
    sd_model = on_model(standins["sdxl"])
    clip_l, bigg = text.encoders(sd_model)
    assert (clip_l.name, bigg.name) == ("clip-l", "bigg")
    chunk_l, chunk_g = clip_l.wrapper.tokenize_line(PROMPT)[0][0], bigg.wrapper.tokenize_line(PROMPT)[0][0]
    assert chunk_l.tokens == chunk_g.tokens  # same BPE, same chunking: position i is the same token
    ids = torch.tensor([chunk_l.tokens])
    with torch.no_grad():
        att_l = independent.clip_attention(small_sdxl.clip_l, ids)[0]
        att_g = independent.open_clip_attention(small_sdxl.bigg.model, pad_after_end(ids, 49407, 0))[0]
    expected = {"both": [att_l, att_g], "clip-l": [att_l], "bigg": [att_g]}
    got = {choice: targets(sd_model, choice=choice)[0].t for choice in expected}
    for choice, atts in expected.items():
        torch.testing.assert_close(got[choice], independent.text_target_of_encoders(atts, 7, 3.0, "reference").float(),
                                   atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got["both"], got["clip-l"]) and not torch.allclose(got["both"], got["bigg"])


def test_sdxl_long_prompt_with_break_gives_aligned_chunks(webui, on_model, standins):
    sd_model = on_model(standins["sdxl"])
    prompt = "a cat BREAK " + " ".join(["red apple green pear"] * 22)  # 2 + 88 tokens: 3 chunks
    got = targets(sd_model, prompt)
    assert [c.n for c in got] == [2, 75, 13] and [c.offset for c in got] == [0, 77, 154]
    cond = sd_model.get_learned_conditioning(prompt_parser.SdConditioning([prompt], width=128, height=128))
    assert cond["crossattn"].shape[1] == 3 * 77


def test_encoders_that_chunk_differently_fall_back_to_bigg(webui, on_model, standins, monkeypatch):
    sd_model = on_model(standins["sdxl"])
    clip_l = text.encoders(sd_model)[0].wrapper
    real = type(clip_l).tokenize
    monkeypatch.setattr(type(clip_l), "tokenize", lambda self, texts: [t[:1] + t[2:] for t in real(self, texts)])
    warnings = []
    got = targets(sd_model, warn=warnings.append)
    assert "different tokens" in warnings[0] and "bigg alone" in warnings[0]
    assert got[0].n == 7  # bigG's chunk: its own tokens (CLIP-L lost one)
    monkeypatch.undo()
    torch.testing.assert_close(got[0].t, targets(sd_model, choice="bigg")[0].t)


def test_textual_inversion_on_sdxl_inserts_each_encoders_vectors(webui, on_model, standins, small_sdxl):
    sd_model = on_model(standins["sdxl"])
    clip_l, bigg = text.encoders(sd_model)
    vec = {"clip_l": torch.randn(2, 96, generator=torch.Generator().manual_seed(3)),
           "clip_g": torch.randn(2, 160, generator=torch.Generator().manual_seed(4))}
    embedding = sd_hijack.Embedding(vec, "tsamstyle")
    sd_hijack.model_hijack.embedding_db.register(embedding, clip_l.wrapper.tokenize(["tsamstyle"])[0])
    try:
        got = targets(sd_model, "a photo of tsamstyle")
        ids = torch.tensor([clip_l.wrapper.tokenize_line("a photo of tsamstyle")[0][0].tokens])
        assert bigg.wrapper.tokenize_line("a photo of tsamstyle")[0][0].tokens == ids[0].tolist()
    finally:
        sd_hijack.model_hijack.embedding_db.ids_lookup.clear()
    assert got[0].n == 5 and got[0].labels[-2:] == ("tsamstyle[0]", "tsamstyle[1]")
    assert ids[0, 4:6].tolist() == [0, 0]  # the embedding's placeholders, after <bos> + "a photo of"

    def insert(vectors):
        return lambda module, args, out: torch.cat([out[:, :4], vectors[None].to(out), out[:, 6:]], 1)

    with torch.no_grad():  # the pristine towers, the vectors put in by hand
        hook = small_sdxl.clip_l.get_input_embeddings().register_forward_hook(insert(vec["clip_l"]))
        att_l = independent.clip_attention(small_sdxl.clip_l, ids)[0]
        hook.remove()
        hook = small_sdxl.bigg.model.token_embedding.register_forward_hook(insert(vec["clip_g"]))
        att_g = independent.open_clip_attention(small_sdxl.bigg.model, pad_after_end(ids, 49407, 0))[0]
        hook.remove()
    torch.testing.assert_close(got[0].t, independent.text_target_of_encoders([att_l, att_g], 5, 3.0, "reference").float(),
                               atol=1e-6, rtol=1e-5)
    assert sd_hijack.model_hijack.fixes is None


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_medvram_text_pass_moves_the_text_encoder_first(webui, on_model, small_sd2, small_sdxl, family):
    """lowvram.py hooks SDXL's whole conditioner (SD 2.x: open_clip's token embedding); T-SAM's
    text pass must have the WebUI's device hook move the text encoder before its first layer runs."""
    rt = {"sd2": small_sd2, "sdxl": small_sdxl}[family]
    sd_model = on_model(w.make_sd_model(rt))
    sd_hijack.model_hijack.undo_hijack(sd_model)  # load_model: lowvram.apply (send_model_to_device), then the hijack
    shared.cmd_opts.medvram = True
    try:
        lowvram.apply(sd_model)
    finally:
        shared.cmd_opts.medvram = False
    sd_hijack.model_hijack.hijack(sd_model)
    expected = sd_model.conditioner if family == "sdxl" else sd_model.cond_stage_model.wrapped
    lowvram.module_in_gpu = sd_model.model  # where sampling left it
    where = []
    for encoder in text.encoders(sd_model):
        tower = encoder.wrapper.wrapped
        first = tower.transformer.text_model.encoder.layers[0] if encoder.name == "clip-l" else tower.model.transformer.resblocks[0]
        first.register_forward_pre_hook(lambda *a: where.append(lowvram.module_in_gpu))
    targets(sd_model)
    assert where and all(m is expected for m in where)
    lowvram.module_in_gpu = None


@pytest.mark.parametrize("family,sampler", [("sd2", "Euler a"), ("sd2", "DDIM"), ("sdxl", "DPM++ 2M"), ("sdxl", "Heun"),
                                            ("sdxl", "UniPC")])
def test_samplers_guide_each_step_once_with_different_prompts(webui, on_model, standins, monkeypatch, family, sampler):
    on_model(standins[family])
    seen = spy_guided(monkeypatch)
    prompts = [PROMPT, "a dog chasing a red ball"]
    p, res = run(webui, prompt=prompts, batch_size=2, sampler_name=sampler)
    _, plain = run(webui, dict(enabled=False), prompt=prompts, batch_size=2, sampler_name=sampler)
    steps = [s for s, *_ in seen]
    assert steps == list(range(len(steps))) and len(steps) >= 2
    assert seen[0][1] == [(0, (7,)), (1, (6,))]
    assert all(unet is shared.sd_model.model.diffusion_model for *_, unet, _model in seen)
    for i in range(2):
        assert torch.isfinite(res.latents[i]).all() and (res.latents[i] - plain.latents[i]).abs().max() > 0


def test_sdxl_hires_pass_is_guided_with_its_own_size_conds(webui, on_model, standins, monkeypatch):
    on_model(standins["sdxl"])
    seen = spy_guided(monkeypatch)
    vectors = []
    real_apply = type(shared.sd_model).apply_model

    def apply_model(self, x, t, cond):
        vectors.append(cond["vector"][:, -256:].clone())  # the target-size embedding
        return real_apply(self, x, t, cond)

    monkeypatch.setattr(type(shared.sd_model), "apply_model", apply_model)
    p, res = run(webui, dict(hires=True), enable_hr=True, hr_scale=1.5, denoising_strength=0.6, steps=4)
    assert res.latents[0].shape[-1] == 12 and len(seen) > 3
    assert len({tuple(v[0, :4].tolist()) for v in vectors}) == 2  # 64 px and 96 px conds
    assert "T-SAM loss trace" in parse_generation_parameters(res.infotexts[0])


def test_sd2_img2img_is_guided(webui, on_model, standins, monkeypatch):
    on_model(standins["sd2"])
    seen = spy_guided(monkeypatch)
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    _, res = run(webui, img2img=True, init_latent=init, denoising_strength=0.6, steps=5)
    assert len(seen) == 2 and torch.isfinite(res.latents[0]).all()


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_off_is_bit_identical_to_not_installed(webui, on_model, standins, family):
    on_model(standins[family])
    _, with_ext = run(webui, dict(enabled=False), sampler_name="DPM++ 2M")
    bare = scripts.ScriptRunner([], is_img2img=False)
    p = processing.StableDiffusionProcessingTxt2Img(script_args=[0], scripts_runner=bare, prompt=PROMPT, seed=1, steps=4,
                                                    width=64, height=64, sampler_name="DPM++ 2M")
    w.reset_state()
    without = processing.process_images(p)
    assert torch.equal(with_ext.latents[0], without.latents[0]) and with_ext.infotexts == without.infotexts


def test_text_encoder_is_in_the_infotext_of_two_encoder_models_only(webui, on_model, standins):
    for family, written in (("sd2", False), ("sdxl", True)):
        on_model(standins[family])
        _, res = run(webui, dict(text_encoder="bigg"), steps=2)
        parsed = parse_generation_parameters(res.infotexts[0])
        assert (infotext.KEYS["text_encoder"] in parsed) == written
        assert infotext.read(parsed).get("text_encoder") == ("bigg" if written else None)


def test_sd3_and_unreadable_text_encoders_are_refused_by_name(webui, standins, small_sd):
    from tsam_ext.host.job import unsupported_model

    assert unsupported_model(standins["sd2"]) is None and unsupported_model(standins["sdxl"]) is None

    class SD3:
        is_sd3 = True

    assert "SD3 is a diffusion transformer" in unsupported_model(SD3())
    sd_model = w.make_sd_model(small_sd)
    sd_model.cond_stage_model = torch.nn.Linear(1, 1)  # e.g. alt-diffusion's XLM-R encoder
    assert "text encoder Linear is not one T-SAM can read" in unsupported_model(sd_model)


@pytest.mark.parametrize("family,encoders", [("sd2", ""), ("sdxl", "clip-l + bigg, ")])
def test_preview_on_sd2_and_sdxl(webui, on_model, standins, family, encoders):
    from tsam_ext.host import preview

    on_model(standins[family])
    panels = preview.panels("a cat on a mat AND a red ball", 3.0, "reference")
    assert [title for title, _ in panels] == [f"T (sub-prompt {k}, {encoders}gamma 3, reference order)" for k in (1, 2)]
    if family == "sdxl":
        title, _ = preview.panels(PROMPT, 3.0, "reference", "bigg")[0]
        assert title == "T (bigg, gamma 3, reference order)"


def test_text_encoder_axis(webui):
    from test_ui_contract import axis, load_xyz
    from tsam_ext.host import xyz

    module = load_xyz()
    xyz.register()
    option = axis(module, "[T-SAM] Text encoder for T (SDXL)")
    assert option.choices() == ["both", "clip-l", "bigg"]
    assert option.format_value(None, option, "bigg") == "T-SAM text encoder: bigg"
    with pytest.raises(RuntimeError, match="text_encoder must be one of"):
        module.process_axis(None, option, "", ["both", "clip-g"])
    p = processing.StableDiffusionProcessingTxt2Img()
    option.apply(p, "clip-l", None)
    assert p.tsam_text_encoder == "clip-l" and p.tsam_axis
