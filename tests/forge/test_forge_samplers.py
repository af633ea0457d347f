"""Every sampler of Forge's list, guided once per step on the latent it continues from, and the
guided latent checked against a sampler loop written out by hand (z-space through Forge's
predictor, and DDIM's timestep-to-sigma path)."""

import importlib
import math

import pytest
import torch

from tsam_ext.core import controller
from tsam_ext.core.guidance import ChunkTarget, RowTarget, guidance_step
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.samplers import profile_for
from tsam_ext.core.schedule import make_plan
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention

REAL_GUIDE = controller.GuidedPass.guide
PROMPT = "a black car and a white clock"
# Forge's sampler list as its stand-in has it (IPNDM_V and DEIS are left out of the stand-in;
# they call the model as IPNDM does)
FORGE_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
                  "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "HeunPP2", "IPNDM",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM", "DDPM"]
# DDIM CFG++ reads the uncond prediction Forge's CFG denoiser keeps (last_noise_uncond), which the
# stand-in's denoiser does not keep yet; the real Forge guided it (README, A1111 and Forge)
GUIDED = [name for name in FORGE_SAMPLERS if name != "DDIM CFG++"]


def test_the_list_is_the_stand_ins(forge):
    assert [s.name for s in importlib.import_module("modules.sd_samplers").all_samplers] == FORGE_SAMPLERS


@pytest.mark.parametrize("sampler", GUIDED)
def test_every_forge_sampler_is_guided_once_per_step(forge, monkeypatch, sampler):
    guided = []

    def spy(self, x, step, *args):
        guided.append(step)
        return REAL_GUIDE(self, x, step, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), sampler_name=sampler, steps=5, width=64, height=64)
    assert torch.isfinite(res.latents[0]).all()
    assert "T-SAM warning" not in res.infotexts[0]
    assert guided == list(range(len(guided)))
    if sampler != "DPM adaptive":
        n = {"DPM fast": 5 // 3 + 1, "DDIM": 4, "PLMS": 4, "DPM++ 3M SDE": 5}.get(sampler, 5)
        assert len(guided) == math.floor(0.6 * n + 0.5)


class Probe:
    """A model recording the calls a sampler makes and the steps the profile would guide."""

    def __init__(self, profile):
        self.profile, self.calls, self.callbacks, self.since = profile, 0, 0, 0
        self.guided, self.reported = [], []

    def __call__(self, x, sigma, **_):
        self.calls += 1
        self.since += 1
        step = self.profile.step_of_call(self.calls, self.callbacks, self.since)
        if step is not None:
            self.guided.append((step, x))
        return x * 0.8

    def callback(self, d):
        self.reported.append(d["x"])
        self.callbacks += 1
        self.since = 0


@pytest.mark.parametrize("n", [2, 3, 8])
def test_heun_pp2_steps_are_found_to_the_last_one(forge, n):
    """Heun++ evaluates 3 times a step, twice at the second-to-last and once at the last: every
    step, the last included, is guided once, on the latent the sampler reports for it."""
    kd = importlib.import_module("k_diffusion.sampling")
    sigmas = kd.get_sigmas_karras(n, 0.03, 14.6)
    probe = Probe(profile_for("sample_heunpp2", kwargs={"sigmas": sigmas}))
    kd.sample_heunpp2(probe, torch.randn(1, 4, 8, 8) * sigmas[0], sigmas, callback=probe.callback, disable=True)
    assert probe.calls == 3 * n - 3 and [s for s, _ in probe.guided] == list(range(n))
    assert all(x is probe.reported[s] for s, x in probe.guided)


def oracle(forge, sampler, steps=4):
    """The sampler by hand, with T-SAM's core step on the same UNet (its own weights, normal tensors)."""
    model = forge.model
    km = model.forge_objects.unet.model
    engine = model.text_processing_engine
    chunk = engine.tokenize_line(PROMPT)[0][0]
    att = clip_self_attention(engine.text_encoder.transformer, torch.tensor([chunk.tokens]))
    rows = [RowTarget(0, (ChunkTarget(text_target(att[0], chunk.tokens.index(engine.id_end, 1) - 1), 0),))]
    cond, uncond = (model.get_learned_conditioning([t]).clone() for t in (PROMPT, ""))
    unet = Recorder(km.diffusion_model)
    plan = make_plan(steps - (sampler == "DDIM"), 5.0, 0.6, None)
    predictor = km.predictor

    def denoised(x, sigma):
        out = km.apply_model(torch.cat([x, x]), torch.cat([sigma, sigma]), c_crossattn=torch.cat([uncond, cond]),
                             transformer_options={})
        u, c = out.chunk(2)
        return u + (c - u) * 7.0

    def step_delta(z, sigma, i):
        from tsam_ext.host.forge.autograd import trainable
        with trainable(km.diffusion_model):
            c_in = predictor.calculate_input(sigma, torch.ones(1, 1, 1, 1))
            run = lambda zr, ids: km.apply_model(zr / c_in, sigma, c_crossattn=cond, transformer_options={})
            return guidance_step(z, rows, run, unet, float(plan.alphas[i])).delta

    return plan, predictor, denoised, step_delta


def test_euler_guided_latent_matches_the_loop_by_hand(forge):
    rng = importlib.import_module("modules.rng")
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), sampler_name="Euler", steps=4, width=128, height=128, seed=3)
    _, plain = forge.bare(sampler_name="Euler", steps=4, width=128, height=128, seed=3)
    assert (res.latents[0] - plain.latents[0]).abs().max() > 1e-3  # the comparison below is not vacuous
    plan, predictor, denoised, step_delta = oracle(forge, "Euler")
    noise = rng.ImageRNG((4, 16, 16), [3]).next()
    sampler = importlib.import_module("modules.sd_samplers").create_sampler("Euler", forge.model)
    sigmas = sampler.model_wrap.get_sigmas(4)
    x = noise * sigmas[0]
    with torch.inference_mode():
        for i in range(4):
            s = sigmas[i:i + 1]
            if plan.guides(i):
                c_in = predictor.calculate_input(s, torch.ones(1, 1, 1, 1))
                x = x + step_delta(x * c_in, s, i) / c_in
            x = x + (x - denoised(x, s)) / s * (sigmas[i + 1] - s)
    torch.testing.assert_close(res.latents[0], x[0], atol=1e-4, rtol=1e-4)


def test_ddim_guided_latent_matches_the_loop_by_hand(forge):
    """DDIM hands Forge a timestep; Forge rescales x to the sigma of that timestep: the UNet input,
    and so the guided latent, is x itself."""
    rng = importlib.import_module("modules.rng")
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), sampler_name="DDIM", steps=4, width=128, height=128, seed=3)
    _, plain = forge.bare(sampler_name="DDIM", steps=4, width=128, height=128, seed=3)
    assert (res.latents[0] - plain.latents[0]).abs().max() > 1e-3  # the comparison below is not vacuous
    plan, predictor, denoised, step_delta = oracle(forge, "DDIM")
    x = rng.ImageRNG((4, 16, 16), [3]).next()
    acd = 1.0 / (predictor.sigmas ** 2 + 1)
    sigma_of = ((1 - acd) / acd) ** 0.5  # the sigma Forge's denoiser gives a timestep
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // 4) + 1, 0, 999)
    with torch.inference_mode():
        for i in range(len(timesteps) - 1):
            index = len(timesteps) - 1 - i
            t = timesteps[index]
            s = sigma_of[t].reshape(1)
            if plan.guides(i):
                x = x + step_delta(x, s, i)  # z = x: c_in * sqrt(sigma^2 + 1) = 1
            xk = x * (s ** 2 + 1) ** 0.5
            e_t = (xk - denoised(xk, s)) / s
            a_t, a_prev = acd[t], acd[timesteps[index - 1]]
            x = a_prev.sqrt() * (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt() + (1 - a_prev).sqrt() * e_t
    torch.testing.assert_close(res.latents[0], x[0], atol=1e-4, rtol=1e-4)
