"""SD 2.x and SDXL in the Forge stand-in, through the same family readers as A1111: T from Forge's
text engines (OpenCLIP loaded as transformers' CLIP; SDXL's two engines, their mean, the "Text
encoder for T" choice), the latent/4 layers of Forge's SDXL UNet, SDXL's dict conds sliced per
image in Forge's [uncond, cond] batch, and off == absent."""

import importlib

import pytest
import torch

import independent
from tsam_ext.families.open_clip import pad_after_end

PROMPT = "a black car and a white clock"


def host(name):
    return importlib.import_module(name)


def params(line):
    return host("modules.infotext_utils").parse_generation_parameters(line)


@pytest.fixture
def on(forge, small_sd):
    """Load a checkpoint into the Forge stand-in for one test (then SD 1.5 again)."""
    def load(name, checkpoint):
        forge.load(name, checkpoint)
        return forge.model
    yield load
    forge.load("random-sd15", small_sd)


def targets(model, choice="both", prompt=PROMPT, warn=print):
    return host("tsam_ext.host.forge.text").TextTargets(model, 3.0, "reference", choice, warn=warn)[prompt]


def test_sdxl_target_is_the_mean_of_both_engines_as_in_a1111(on, small_sdxl):
    """The same T as A1111's reader of the same weights (open_clip's bigG tower there, transformers'
    CLIP here): both engines' mean, or the one chosen; CLIP-L is engine ``_l``, bigG ``_g``."""
    model = on("tiny-sdxl", small_sdxl)
    encoders = host("tsam_ext.host.forge.text").encoders(model)
    assert [(e.name, e.wrapper) for e in encoders] == [("clip-l", model.text_processing_engine_l),
                                                         ("bigg", model.text_processing_engine_g)]
    ids = torch.tensor([model.text_processing_engine_l.tokenize_line(PROMPT)[0][0].tokens])
    with torch.no_grad():
        att_l = independent.clip_attention(small_sdxl.clip_l, ids)[0]
        att_g = independent.open_clip_attention(small_sdxl.bigg.model, pad_after_end(ids, 49407, 0))[0]
    expected = {"both": [att_l, att_g], "clip-l": [att_l], "bigg": [att_g]}
    got = {choice: targets(model, choice)[0] for choice in expected}
    for choice, atts in expected.items():
        assert got[choice].n == 7 and got[choice].labels == ("a", "black", "car", "and", "a", "white", "clock")
        torch.testing.assert_close(got[choice].t, independent.text_target_of_encoders(atts, 7, 3.0, "reference").float(),
                                   atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got["both"].t, got["clip-l"].t) and not torch.allclose(got["both"].t, got["bigg"].t)


def test_sd2_target_reads_the_23_blocks_forge_loads(on, small_sd2):
    """Forge loads SD 2.x's OpenCLIP ViT-H with diffusers' 23-layer config (the 24th block, which
    SD 2.x's conditioning skips, is not in the model): T is their mean, not the 24 A1111 reads."""
    model = on("tiny-sd2", small_sd2)
    assert [e.name for e in host("tsam_ext.host.forge.text").encoders(model)] == ["openclip-h"]
    ids = torch.tensor([model.text_processing_engine.tokenize_line(PROMPT)[0][0].tokens])
    with torch.no_grad():
        att = independent.open_clip_attention(small_sd2.cond_stage_model.model, pad_after_end(ids, 49407, 0))[0]
    got = targets(model)[0].t
    torch.testing.assert_close(got, independent.text_target(att[:23], 7, 3.0, "reference").float(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, independent.text_target(att, 7, 3.0, "reference").float(), atol=1e-5)


def test_sdxl_latent4_layers_are_every_block_of_the_level(on, small_sdxl):
    """Forge's SDXL UNet: input 7, 8, middle and output 0, 1, 2 at latent/4, 10 transformer blocks
    each (60 layers), the same names as sgm's in A1111."""
    from tsam_ext.core.recorder import Recorder

    model = on("tiny-sdxl", small_sdxl)
    unet = host("tsam_ext.host.forge").unet(model)
    names = {id(m): n for n, m in unet.named_modules()}
    got = [names[id(m)] for m in Recorder(unet).layers]
    want = [f"{block}.1.transformer_blocks.{k}.attn2" for block in
            ("input_blocks.7", "input_blocks.8", "middle_block", "output_blocks.0", "output_blocks.1", "output_blocks.2")
            for k in range(10)]
    assert sorted(got) == sorted(want)


def test_sdxl_guidance_runs_on_each_images_own_dict_cond(forge, on, small_sdxl, monkeypatch):
    """A batch of two prompts: each guided row gets its own image's crossattn AND vector (the rows
    of Forge's [uncond, cond] batch the guidance pass must not mix up); off == absent."""
    model = on("tiny-sdxl", small_sdxl)
    km = model.forge_objects.unet.model
    calls = []
    real = type(km).apply_model

    def spy(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        if torch.is_grad_enabled():  # the guidance pass (sampling runs without autograd)
            calls.append((c_crossattn.detach().clone(), kwargs["y"].detach().clone()))
        return real(self, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    monkeypatch.setattr(type(km), "apply_model", spy)
    prompts = [PROMPT, "a red apple on a blue table"]
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), steps=4, width=64, height=64, batch_size=2,
                            prompt=prompts, negative_prompt="blurry")
    info = params(res.infotexts[0])
    assert "T-SAM loss trace" in info and "T-SAM warning" not in info and info["T-SAM text encoder"] == "both"
    assert calls and all(c.shape[0] == 2 for c, _y in calls)
    sdc = host("modules.prompt_parser").SdConditioning(prompts, width=64, height=64)
    expected = model.get_learned_conditioning(sdc)
    for crossattn, y in calls:
        torch.testing.assert_close(crossattn, expected["crossattn"].float())
        torch.testing.assert_close(y, expected["vector"].float())
    monkeypatch.undo()
    _, off = forge.generate(tsam=dict(enabled=False), steps=3, width=64, height=64)
    _, absent = forge.bare(steps=3, width=64, height=64)
    assert torch.equal(off.latents[0], absent.latents[0]) and off.infotexts == absent.infotexts

