"""A refiner taking over in the middle of sampling (the stand-in of A1111's ``apply_refiner``:
new weights into the same model object or a new model, new conds, a new inner model): guidance
goes on with the refiner's own cross-attention layers and text target, never with maps of the
UNet that is no longer sampling, or stops at the switch with a message if the refiner cannot be
guided; the image is produced either way."""

import torch

import webui as w
from modules import sd_hijack, sd_models, shared
from modules.infotext_utils import parse_generation_parameters
from tsam_ext.core import controller
from tsam_ext.host.a1111 import text
from tsam_ext.runtime import models

PROMPT = "a black car and a white clock"
REAL_GUIDE = controller.GuidedPass.guide


def spy(monkeypatch):
    """Per guided step: (step, the UNet its recorder reads, the model sampling, T of the first chunk)."""
    seen = []

    def guide(self, x, step, rows, *args):
        seen.append((step, self.recorder.unet, shared.sd_model, rows[0].chunks[0].t))
        return REAL_GUIDE(self, x, step, rows, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", guide)
    return seen


def generate(webui, refiner, switch_at=0.3, **kwargs):
    return webui.generate(tsam=dict(enabled=True, refine=False, guided_steps=100), prompt=PROMPT, seed=1, steps=8,
                          width=64, height=64, sampler_name="Euler", refiner_checkpoint_info=refiner,
                          refiner_switch_at=switch_at, **kwargs)


def check_switch(seen, base, refiner_model):
    models_seen = [model for _, _, model, _ in seen]
    assert all(unet is model.model.diffusion_model for _, unet, model, _ in seen)  # never the other UNet's maps
    switch = models_seen.index(refiner_model)
    assert 0 < switch < len(seen) - 1 and models_seen[:switch] == [base] * switch
    assert [s for s, *_ in seen] == list(range(len(seen)))
    return switch


def test_guidance_goes_on_with_a_refiner_of_another_family(webui, on_model, small_sd2, small_sdxl, monkeypatch, capsys):
    base = on_model(w.make_sd_model(small_sd2))
    info = sd_models.CheckpointInfo("tiny-sdxl", "0f1d2c3b4a", "sd_xl_base.yaml", build=lambda: w.make_sd_model(small_sdxl))
    seen = spy(monkeypatch)
    p, res = generate(webui, info)
    refiner = shared.sd_model
    assert refiner is not base and refiner.is_sdxl and refiner.sd_checkpoint_info is info
    switch = check_switch(seen, base, refiner)
    expected = text.TextTargets(refiner, 3.0, "reference")[PROMPT][0].t
    for _, _, model, t in seen[switch:]:
        torch.testing.assert_close(t, expected)
    assert (f"the refiner tiny-sdxl [0f1d2c3b4a] took over in step {switch}; guidance goes on from step {switch + 1}"
            in capsys.readouterr().out)
    got = parse_generation_parameters(res.infotexts[0])
    assert got["Refiner"] == "tiny-sdxl [0f1d2c3b4a]" and "T-SAM loss trace" in got and "T-SAM warning" not in got
    assert torch.isfinite(res.latents[0]).all()


def test_a_refiner_loaded_into_the_same_model_brings_its_own_text_target(webui, on_model, small_sd2, monkeypatch):
    base = on_model(w.make_sd_model(small_sd2))
    other = w.make_sd_model(models.build("sd2-v", model_channels=32, decoder=False, text_head_dim=8, seed=1))
    sd_hijack.model_hijack.undo_hijack(other)
    info = sd_models.CheckpointInfo("tiny-sd2v-refiner", "9a8b7c6d5e", base.used_config,
                                    state_dict={k: v.clone() for k, v in other.state_dict().items()})
    before = text.TextTargets(base, 3.0, "reference")[PROMPT][0].t
    seen = spy(monkeypatch)
    generate(webui, info)
    assert shared.sd_model is base and base.sd_checkpoint_info is info  # same object, the refiner's weights
    switch = next(i for i, (*_, t) in enumerate(seen) if not torch.equal(t, before))
    after = text.TextTargets(base, 3.0, "reference")[PROMPT][0].t
    assert not torch.allclose(before, after)
    for _, unet, _, t in seen[switch:]:
        torch.testing.assert_close(t, after)
        assert unet is base.model.diffusion_model
    assert 0 < switch < len(seen) - 1


def test_guidance_stops_at_a_refiner_it_cannot_guide(webui, on_model, small_sd2, small_sdxl, monkeypatch):
    base = on_model(w.make_sd_model(small_sdxl))

    def flagged_sd3():  # samples like SD 2.x here, refused by name as an SD3 checkpoint would be
        model = w.make_sd_model(small_sd2)
        model.is_sd3 = True
        return model

    info = sd_models.CheckpointInfo("odd-refiner", "1234567890", "odd.yaml", build=flagged_sd3)
    seen = spy(monkeypatch)
    _, res = generate(webui, info)
    assert all(model is base for _, _, model, _ in seen) and 0 < len(seen) < 8
    warning = parse_generation_parameters(res.infotexts[0])["T-SAM warning"]
    assert f"the refiner odd-refiner [1234567890] took over in step {len(seen)}, and" in warning
    assert "SD3 is a diffusion transformer" in warning and torch.isfinite(res.latents[0]).all()
