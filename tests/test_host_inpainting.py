"""Inpainting in the A1111 stand-in (processing's mask / nmask, CFGDenoiser's ``apply_blend`` before
the UNet for the timestep samplers and after it for k-diffusion's): T-SAM's pass sees the latent
the UNet sees, and its steps leave the kept region where it is."""

import pytest
import torch

from tsam_ext.core import controller
from tsam_ext.core.infotext import TRACE, WARNING

PROMPT = "a black car and a white clock"
SIZE = 128


def latent_mask():
    """[h, w]: 1 = repaint (the right half), 0 = keep."""
    m = torch.zeros(SIZE // 8, SIZE // 8)
    m[:, SIZE // 16:] = 1
    return m


def inpaint(webui, sampler, tsam, batch_size=1):
    init = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(7))
    return webui.generate(tsam=dict(enabled=True, refine=False) | tsam, img2img=True, init_latent=init,
                          latent_mask=latent_mask(), denoising_strength=0.75, prompt=[PROMPT] * batch_size,
                          batch_size=batch_size, seed=3, steps=8, width=SIZE, height=SIZE, sampler_name=sampler)


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DDIM"])
def test_guidance_leaves_the_kept_region_where_it_is(webui, monkeypatch, sampler):
    """The step is zero on every kept latent pixel and not elsewhere (before: the whole latent moved,
    and DDIM's pass read an unblended latent)."""
    real, deltas = controller.guidance_step, []

    def watching(*args, **kw):
        out = real(*args, **kw)
        deltas.append(out.delta.detach())
        return out

    monkeypatch.setattr(controller, "guidance_step", watching)
    _, res = inpaint(webui, sampler, dict(alpha=4.0), batch_size=2)
    assert res.infotexts[0].count(f"{WARNING}: ") == 0 and TRACE in res.infotexts[0]
    keep = latent_mask() == 0
    assert deltas
    for delta in deltas:
        assert delta[..., keep].abs().max() == 0
        assert delta[..., ~keep].abs().max() > 0


@pytest.mark.parametrize("sampler,blends_first", [("Euler", False), ("DDIM", True)])
def test_the_pass_sees_the_latent_the_unet_sees(webui, sampler, blends_first):
    """At alpha 0 each guided row's UNet input equals that image's cond row of the sampler's own
    call right after it: blended with the original latent where the sampler blends before the UNet."""
    from modules import shared

    unet = shared.sd_model.model.diffusion_model
    inputs = []
    handle = unet.register_forward_pre_hook(
        lambda m, args, kw: inputs.append((args[0] if args else kw["x"]).detach().clone()), with_kwargs=True)
    try:
        inpaint(webui, sampler, dict(alpha=0.0))
    finally:
        handle.remove()
    guided = [i for i, x in enumerate(inputs) if x.shape[0] == 1]
    assert guided and all(inputs[i + 1].shape[0] == 2 for i in guided)
    keep = latent_mask() == 0
    for i in guided:
        torch.testing.assert_close(inputs[i][0], inputs[i + 1][0], rtol=0, atol=1e-6)
    if blends_first:  # the kept region is the original latent, not the noisy one
        assert not torch.allclose(inputs[guided[0]][0][..., keep], torch.zeros(()), atol=1e-3)
