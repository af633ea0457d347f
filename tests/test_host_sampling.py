"""The adapter inside the WebUI stand-in: the guided latent is the one the sampler continues
from, in z-space, once per sampler step, for every sampler; checked against oracle loops that
apply the core guidance step by hand and then the sampler's own update."""

import math

import pytest
import torch
from k_diffusion import sampling

from modules import rng, shared, sd_samplers
from tsam_ext.core import controller
from tsam_ext.core.guidance import ChunkTarget, RowTarget, guidance_step
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.schedule import Refinement, make_plan
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention

PROMPT = "a black car and a white clock"
SEED, STEPS, SIZE, CFG = 3, 5, 128, 7.0


class Oracle:
    """T-SAM by hand: the same targets, UNet pass and core step, outside the adapter."""

    def __init__(self, settings=None, steps=STEPS):
        self.model = shared.sd_model
        cm = self.model.cond_stage_model
        chunks, _ = cm.tokenize_line(PROMPT)
        ids = torch.tensor([c.tokens for c in chunks])
        att = clip_self_attention(cm.wrapped.transformer, ids)
        n = chunks[0].tokens.index(cm.id_end, 1) - 1
        self.rows = [RowTarget(0, (ChunkTarget(text_target(att[0], n), 0),))]
        self.cond = self.model.get_learned_conditioning([PROMPT])
        self.uncond = self.model.get_learned_conditioning([""])
        self.settings = dict(alpha=5.0, fraction=0.6, refine=None) | (settings or {})
        self.recorder = Recorder(self.model.model.diffusion_model)

    def plan(self, n):
        return make_plan(n, self.settings["alpha"], self.settings["fraction"], self.settings["refine"])

    def delta_z(self, z, t, alpha, refinement):
        run = lambda zr, ids: self.model.apply_model(zr, t.expand(len(ids)), {"c_crossattn": [self.cond[ids]]})
        return guidance_step(z, self.rows, run, self.recorder, alpha, refinement=refinement).delta

    def cfg(self, inner, x, sigma):
        out = inner(torch.cat([x, x]), torch.cat([sigma, sigma]),
                    cond={"c_crossattn": [torch.cat([self.cond, self.uncond])], "c_concat": [x.new_zeros(2, 5, 1, 1)]})
        c, u = out.chunk(2)
        return u + (c - u) * CFG


def run_webui(webui, sampler, **tsam):
    """The guided image, checked to differ from the unguided one (so no comparison is vacuous)."""
    kwargs = dict(prompt=PROMPT, seed=SEED, steps=STEPS, width=SIZE, height=SIZE, sampler_name=sampler, cfg_scale=CFG)
    p, res = webui.generate(tsam=dict(enabled=True, refine=False) | tsam, **kwargs)
    _, plain = webui.generate(tsam=dict(enabled=False), **kwargs)
    assert (res.latents[0] - plain.latents[0]).abs().max() > 1e-3
    return p, res.latents[0]


def k_setup(name):
    sampler = sd_samplers.create_sampler(name, shared.sd_model)
    inner = sampler.model_wrap
    sigmas = inner.get_sigmas(STEPS) if not sampler.config.options.get("scheduler") else \
        sampling.get_sigmas_karras(STEPS, inner.sigmas[0].item(), inner.sigmas[-1].item())
    r = rng.ImageRNG((4, SIZE // 8, SIZE // 8), [SEED])
    return inner, sigmas, r


def guide_x(oracle, inner, x, sigma, i, plan):
    c_in = 1 / (sigma ** 2 + 1) ** 0.5
    dz = oracle.delta_z(x * c_in, inner.sigma_to_t(sigma), float(plan.alphas[i]), plan.refinement_for(i))
    return x + dz / c_in


def k_oracle(name, update, settings=None):
    """A k-diffusion sampler written out by hand: guide step i's latent, then ``update``."""
    oracle = Oracle(settings)
    inner, sigmas, r = k_setup(name)
    plan = oracle.plan(STEPS)
    x = r.next() * sigmas[0]
    with torch.no_grad():
        for i in range(STEPS):
            if i < plan.guided:
                x = guide_x(oracle, inner, x, sigmas[i:i + 1], i, plan)
            x = update(lambda latent, sigma: oracle.cfg(inner, latent, sigma), x, sigmas[i:i + 1], sigmas[i + 1:i + 2], r)
    return x[0]


def test_euler_first_order_with_refinement(webui):
    _, image = run_webui(webui, "Euler", refine=True, refine_iterations=3)

    def euler(cfg, x, s, s_next, r):
        return x + (x - cfg(x, s)) / s * (s_next - s)

    torch.testing.assert_close(image, k_oracle("Euler", euler, {"refine": Refinement(3)}), atol=1e-4, rtol=1e-4)


def test_heun_second_order_guides_the_first_evaluation_only(webui):
    _, image = run_webui(webui, "Heun")

    def heun(cfg, x, s, s_next, r):
        d = (x - cfg(x, s)) / s
        if s_next == 0:
            return x + d * (s_next - s)
        x2 = x + d * (s_next - s)  # the second evaluation, on a derived latent: not guided
        return x + (d + (x2 - cfg(x2, s_next)) / s_next) / 2 * (s_next - s)

    torch.testing.assert_close(image, k_oracle("Heun", heun), atol=1e-4, rtol=1e-4)


def test_euler_ancestral(webui):
    _, image = run_webui(webui, "Euler a")

    def euler_ancestral(cfg, x, s, s_next, r):
        down, up = sampling.get_ancestral_step(s[0], s_next[0], eta=1.0)
        x = x + (x - cfg(x, s)) / s * (down - s)
        return x + r.next() * up if s_next > 0 else x

    torch.testing.assert_close(image, k_oracle("Euler a", euler_ancestral), atol=1e-4, rtol=1e-4)


def test_ddim_timesteps_sampler(webui):
    _, image = run_webui(webui, "DDIM")
    oracle = Oracle()
    alphas_cumprod = shared.sd_model.alphas_cumprod
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // STEPS) + 1, 0, 999)
    n = len(timesteps) - 1
    plan = oracle.plan(n)
    x = rng.ImageRNG((4, SIZE // 8, SIZE // 8), [SEED]).next()
    inner = lambda xi, t, cond: shared.sd_model.apply_model(xi, t, cond)
    with torch.no_grad():
        for i in range(n):
            index = len(timesteps) - 1 - i
            t = timesteps[index].float().reshape(1)
            if i < plan.guided:
                x = x + oracle.delta_z(x, t, float(plan.alphas[i]), None)  # z = x: no c_in
            e_t = oracle.cfg(inner, x, t)
            a_t = alphas_cumprod[timesteps[index]]
            a_prev = alphas_cumprod[timesteps[index - 1]] if index > 0 else alphas_cumprod[0]
            pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
            x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t
    torch.testing.assert_close(image, x[0], atol=1e-4, rtol=1e-4)


def test_unipc_gets_the_update_back_after_its_corrector(webui):
    """UniPC evaluates its predicted latent, then rebuilds it: the update must land on the rebuilt one."""
    _, image = run_webui(webui, "UniPC")
    oracle = Oracle()
    alphas_cumprod = shared.sd_model.alphas_cumprod
    plan = oracle.plan(STEPS)
    grid = torch.linspace(999.0, 0.0, STEPS + 1)
    coeffs = lambda t: (alphas_cumprod[int(round(float(t)))].sqrt(), (1 - alphas_cumprod[int(round(float(t)))]).sqrt())
    inner = lambda xi, t, cond: shared.sd_model.apply_model(xi, t, cond)

    def x0(x, t):
        a, s = coeffs(t)
        return (x - s * oracle.cfg(inner, x, t.reshape(1))) / a

    x = rng.ImageRNG((4, SIZE // 8, SIZE // 8), [SEED]).next()
    with torch.no_grad():
        x = x + oracle.delta_z(x, grid[0].reshape(1), float(plan.alphas[0]), None)
        m_prev = x0(x, grid[0])
        for i in range(STEPS):
            (a_prev, s_prev), (a_t, s_t) = coeffs(grid[i]), coeffs(grid[i + 1])
            noise_part = (x - a_prev * m_prev) / s_prev
            x_pred = a_t * m_prev + s_t * noise_part
            if i < STEPS - 1:
                delta = 0
                if i + 1 < plan.guided:
                    delta = oracle.delta_z(x_pred, grid[i + 1].reshape(1), float(plan.alphas[i + 1]), None)
                model_t = x0(x_pred + delta, grid[i + 1])
                x = a_t * (m_prev + model_t) / 2 + s_t * noise_part + delta
                m_prev = model_t
            else:
                x = x_pred
    torch.testing.assert_close(image, x[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler,c_in_applies", [("Euler", True), ("DDIM", False)])
def test_step_is_taken_in_z_and_mapped_back(webui, monkeypatch, sampler, c_in_applies):
    """x moves by dz / c_in (k-diffusion: dz * sqrt(sigma^2 + 1)); a timestep sampler's x is z."""
    real_step, real_guide, seen = controller.guidance_step, controller.GuidedPass.guide, []

    def fixed_delta(*args, **kwargs):
        out = real_step(*args, **kwargs)
        out.delta = torch.full_like(out.delta, 0.01)
        return out

    def guide(self, x, step, rows, run_unet, c_in):
        before = x.clone()
        out = real_guide(self, x, step, rows, run_unet, c_in)
        seen.append(((x - before).flatten()[0].item(), float(c_in.flatten()[0])))
        return out

    monkeypatch.setattr(controller, "guidance_step", fixed_delta)
    monkeypatch.setattr(controller.GuidedPass, "guide", guide)
    run_webui(webui, sampler)
    dx, c_in = seen[0]
    if c_in_applies:
        sigma0 = math.sqrt(1 / c_in ** 2 - 1)
        assert sigma0 > 10  # the first step of txt2img: sigma_max
        assert dx == pytest.approx(0.01 * math.sqrt(sigma0 ** 2 + 1), rel=1e-4)
    else:
        assert c_in == 1.0 and dx == pytest.approx(0.01, rel=1e-5)


@pytest.mark.parametrize("sampler", [s.name for s in sd_samplers.all_samplers])
def test_every_sampler_is_guided_once_per_step_and_still_produces_an_image(webui, monkeypatch, sampler):
    steps_guided = []
    real = controller.GuidedPass.guide

    def spy(self, x, step, *args):
        steps_guided.append(step)
        return real(self, x, step, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    p, image = run_webui(webui, sampler)
    assert torch.isfinite(image).all()
    assert steps_guided and steps_guided == sorted(set(steps_guided)), "each step once, in order"
    assert steps_guided == list(range(len(steps_guided)))
    if sampler not in ("DPM adaptive",):
        n = {"DPM fast": STEPS // 3 + 1, "DDIM": STEPS - 1, "PLMS": STEPS - 1}.get(sampler, STEPS)
        assert len(steps_guided) == math.floor(0.6 * n + 0.5)
