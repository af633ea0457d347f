"""The guidance on SD 2.x (v-prediction) and SDXL through the standalone runtime: the UNet sees
z = x * c_in under k-diffusion's v wrapper too, the step lowers the loss on both families, the
truncated pass stops after SDXL's last latent/4 layer with the full pass's gradient."""

import pytest
import torch

from tsam_ext.core.guidance import guidance_step, row_losses
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.settings import Settings
from tsam_ext.core.zspace import unet_input_scale, unet_timestep
from tsam_ext.runtime import kdiffusion
from tsam_ext.runtime.pipeline import generate, map_cond, text_rows

PROMPT = "a black car and a white clock"
HW = (16, 16)


@pytest.mark.parametrize("sigma", [14.6, 1.0])
def test_v_prediction_unet_sees_x_times_c_in(small_sd2, sigma):
    """k-diffusion's CompVisVDenoiser feeds the UNet x * c_in with the eps wrapper's c_in, so a step
    taken on z needs nothing v-specific: the UNet input moves by exactly dz."""
    _, external = kdiffusion.load()
    denoiser = external.CompVisVDenoiser(small_sd2)
    assert small_sd2.parameterization == "v"
    cond = small_sd2.conditioning(small_sd2.chunks(PROMPT), (128, 128))
    seen = []
    hook = small_sd2.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    s = torch.tensor([sigma])
    x = torch.randn(1, 4, *HW, generator=torch.Generator().manual_seed(0)) * sigma
    dz = torch.randn(1, 4, *HW, generator=torch.Generator().manual_seed(1)) * 0.05
    c_in = unet_input_scale(denoiser, s)
    try:
        with torch.no_grad():
            denoiser(x, s, cond=cond)
            denoiser(x + dz / c_in, s, cond=cond)
    finally:
        hook.remove()
    torch.testing.assert_close(c_in.flatten(), 1 / torch.sqrt(s ** 2 + 1))
    torch.testing.assert_close(seen[0], x * c_in, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(seen[1] - seen[0], dz, atol=1e-5, rtol=1e-4)


def rows_and_runner(model, prompts, size=(128, 128), t=700.0):
    rows, _ = text_rows(model, prompts, 3.0, "reference")
    from tsam_ext.runtime.pipeline import stack_conds
    cond = stack_conds([model.conditioning(model.chunks(p), size) for p in prompts])

    def run_unet(z_rows, ids):
        return model.apply_model(z_rows, torch.full((len(ids),), t), map_cond(cond, lambda v: v[ids]))

    return rows, run_unet


@pytest.mark.parametrize("family", ["small_sd2", "small_sdxl"])
def test_a_step_lowers_the_loss(request, family):
    model = request.getfixturevalue(family)
    rows, run_unet = rows_and_runner(model, [PROMPT, "a dog chasing a red ball"])
    z = torch.randn(2, 4, *HW, generator=torch.Generator().manual_seed(0))
    recorder = Recorder(model.unet)
    out = guidance_step(z, rows, run_unet, recorder, alpha=20.0)
    with torch.no_grad():
        after = row_losses(recorder.run(lambda: run_unet(out.z, [0, 1]), HW), rows, "reference", True)
    before = torch.tensor([out.losses[0][0], out.losses[1][0]])
    assert (after < before).all(), (before, after)


def test_sdxl_truncated_pass_stops_after_output_block_2_with_the_full_gradient(small_sdxl):
    rows, run_unet = rows_and_runner(small_sdxl, [PROMPT])
    z = torch.randn(1, 4, *HW, generator=torch.Generator().manual_seed(2))
    ran = []
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=n: ran.append(name))
             for n, m in small_sdxl.unet.named_modules() if n.endswith("attn2")]
    try:
        grads = {}
        for truncate in (True, False):
            ran.clear()
            out = guidance_step(z, rows, run_unet, Recorder(small_sdxl.unet), alpha=1.0, truncate=truncate)
            grads[truncate] = (out.delta, list(ran))
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(grads[True][0], grads[False][0], atol=1e-7, rtol=1e-5)
    assert len(grads[False][1]) == 70 and len(grads[True][1]) == 64
    assert grads[True][1][-1] == "output_blocks.2.1.transformer_blocks.9.attn2"


@pytest.mark.parametrize("family,sampler", [("small_sd2", "Euler a"), ("small_sdxl", "DPM++ 2M"), ("small_sdxl", "Heun")])
def test_generation_is_guided_on_every_family(request, family, sampler):
    model = request.getfixturevalue(family)
    common = dict(steps=4, width=128, height=128, sampler=sampler)
    plain = generate(model, [PROMPT, "a dog chasing a red ball"], [1, 2], None, **common)
    guided = generate(model, [PROMPT, "a dog chasing a red ball"], [1, 2], Settings(enabled=True, refine=False),
                      log=lambda _: None, **common)
    assert torch.isfinite(guided.latents).all()
    assert [t.step for t in guided.guided.trace] == [0, 1]
    assert (guided.latents - plain.latents).flatten(1).abs().amax(1).min() > 0  # both images moved


def test_text_encoder_setting_picks_sdxls_encoders(small_sdxl):
    from tsam_ext.core.text_maps import text_target

    att = small_sdxl.self_attention(small_sdxl.chunks(PROMPT))
    for choice, used in (("both", ["clip-l", "bigg"]), ("clip-l", ["clip-l"]), ("bigg", ["bigg"])):
        rows, _ = text_rows(small_sdxl, [PROMPT], 3.0, "reference", choice)
        torch.testing.assert_close(rows[0].chunks[0].t, text_target([att[n][0] for n in used], 7))


def test_timestep_of_the_v_wrapper_is_the_ddpm_one(small_sd2):
    _, external = kdiffusion.load()
    v, eps = external.CompVisVDenoiser(small_sd2), external.CompVisDenoiser(small_sd2)
    s = torch.tensor([3.0])
    torch.testing.assert_close(unet_timestep(v, s), unet_timestep(eps, s))


@pytest.mark.parametrize("arch", ["sd2-v", "sdxl"])
def test_a_checkpoint_in_a1111s_layout_loads_into_the_same_model(tmp_path, request, arch):
    """Keys as A1111 / sgm save them (written here by hand, not by the loader): the loaded model
    conditions and predicts exactly as the one the weights came from."""
    from safetensors.torch import save_file

    from tsam_ext.runtime import models
    from tsam_ext.runtime.model import vae_decoder

    model = request.getfixturevalue({"sd2-v": "small_sd2", "sdxl": "small_sdxl"}[arch])
    parts = {"model.diffusion_model.": model.unet}
    if arch == "sdxl":
        parts |= {"conditioner.embedders.0.transformer.": model.clip_l, "conditioner.embedders.1.model.": model.bigg.model}
    else:
        parts["cond_stage_model.model."] = model.cond_stage_model.model
    state = {prefix + k: v.contiguous() for prefix, module in parts.items() for k, v in module.state_dict().items()}
    decoder, post_quant_conv = vae_decoder()
    state |= {"first_stage_model.decoder." + k: v for k, v in decoder.state_dict().items()}
    state |= {"first_stage_model.post_quant_conv." + k: v for k, v in post_quant_conv.state_dict().items()}
    path = str(tmp_path / "tiny.safetensors")
    save_file(state, path)
    loaded = models.load_checkpoint(arch, path, model_channels=32, text_head_dim=8)
    chunks = model.chunks(PROMPT)
    cond, again = model.conditioning(chunks, (64, 64)), loaded.conditioning(chunks, (64, 64))
    for a, b in ((cond, again),) if not isinstance(cond, dict) else ((cond[k], again[k]) for k in cond):
        torch.testing.assert_close(a, b)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([400.0])
    with torch.no_grad():
        torch.testing.assert_close(model.apply_model(x, t, cond), loaded.apply_model(x, t, again))
    with pytest.raises(ValueError, match="not an (SD1.x|SDXL) checkpoint"):
        models.load_checkpoint("sd1" if arch == "sdxl" else "sdxl", path, model_channels=32, text_head_dim=8)
    if arch == "sdxl":
        with pytest.raises(ValueError, match="does not fit SDXL at 'model.diffusion_model.'"):
            models.load_checkpoint(arch, path, model_channels=64, text_head_dim=8)
