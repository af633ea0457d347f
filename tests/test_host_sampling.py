"""The adapter inside the WebUI stand-in: the guided latent is the one the sampler continues
from, in z-space, once per sampler step, for every sampler; checked against oracle loops that
apply the core guidance step by hand and then the sampler's own update."""

import math
import re
from dataclasses import dataclass, field

import pytest
import torch
from k_diffusion import sampling

from modules import rng, sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, shared
from tsam_ext.core import controller
from tsam_ext.core.guidance import ChunkTarget, RowTarget, StepOutcome, guidance_step
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.schedule import Refinement, fraction_of, make_plan, refinement_steps
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention
from tsam_ext.host.ui import _numbers, steps_hint

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
            if plan.guides(i):
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
            if plan.guides(i):
                x = x + oracle.delta_z(x, t, float(plan.alphas[i]), None)  # z = x: no c_in
            e_t = oracle.cfg(inner, x, t)
            a_t = alphas_cumprod[timesteps[index]]
            a_prev = alphas_cumprod[timesteps[index - 1]] if index > 0 else alphas_cumprod[0]
            pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
            x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t
    torch.testing.assert_close(image, x[0], atol=1e-4, rtol=1e-4)


def test_lcm_steps_z_at_its_own_timesteps(webui):
    """LCM: the UNet sees z = x * c_in at LCM's timestep of sigma (20 k + 19, not k-diffusion's
    fractional t); the move is dz / c_in; the step then continues from the denoised latent."""
    _, image = run_webui(webui, "LCM")

    def lcm_step(denoised, x, sigma, sigma_next, r):
        x = denoised(x, sigma)
        return x + sigma_next * r.next() if sigma_next > 0 else x
    torch.testing.assert_close(image, k_oracle("LCM", lcm_step), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler,c_in_applies", [("Euler", True), ("DDIM", False)])
def test_step_is_taken_in_z_and_mapped_back(webui, monkeypatch, sampler, c_in_applies):
    """x moves by dz / c_in (k-diffusion: dz * sqrt(sigma^2 + 1)); a timestep sampler's x is z."""
    real_step, real_guide, seen = controller.guidance_step, controller.GuidedPass.guide, []

    def fixed_delta(*args, **kwargs):
        out = real_step(*args, **kwargs)
        out.delta = torch.full_like(out.delta, 0.01)
        return out

    def guide(self, x, step, rows, run_unet, c_in, movable=None):
        before = x.clone()
        out = real_guide(self, x, step, rows, run_unet, c_in, movable)
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


# --- every sampler: which steps are guided, against what the sampler really does --------------

@dataclass
class Seen:
    guided: list = field(default_factory=list)    # (step, latent the guided call moved, c_in, refined)
    reported: list = field(default_factory=list)  # the sampler's step callbacks
    sigmas: list = field(default_factory=list)    # schedules the k-diffusion samplers were given


def watch(monkeypatch) -> Seen:
    """Record guided calls and step callbacks; guidance itself is a fixed small move (no UNet pass)."""
    seen = Seen()
    real_guide, real_callback = controller.GuidedPass.guide, sd_samplers_common.Sampler.callback_state
    real_sigmas = sd_samplers_kdiffusion.KDiffusionSampler.get_sigmas

    def step(z, rows, run_unet, recorder, alpha, **_):
        delta = torch.full_like(z, 1e-3, dtype=torch.float32)
        return StepOutcome(delta=delta, z=z + delta, losses={0: [1.0]}, passes=1)

    def guide(self, x, step_, rows, run_unet, c_in, movable=None):
        seen.guided.append((step_, x, float(c_in.flatten()[0]), self.plan.refinement_for(step_) is not None))
        return real_guide(self, x, step_, rows, run_unet, c_in)

    def callback_state(self, d):
        seen.reported.append(d)
        return real_callback(self, d)

    def get_sigmas(self, p, steps):
        seen.sigmas.append(real_sigmas(self, p, steps))
        return seen.sigmas[-1]

    monkeypatch.setattr(controller, "guidance_step", step)
    monkeypatch.setattr(controller.GuidedPass, "guide", guide)
    monkeypatch.setattr(sd_samplers_common.Sampler, "callback_state", callback_state)
    monkeypatch.setattr(sd_samplers_kdiffusion.KDiffusionSampler, "get_sigmas", get_sigmas)
    return seen


def expected_from_the_run(seen: Seen, steps_run: int, by_noise: bool, fraction=0.6):
    """The guided and refined steps the documented rule gives for what the sampler did: the
    first round(X% N) of the N steps it ran, refined at round(0/20/40% N); or, ``by_noise``
    (Restart, whose callback reports each step's start and end sigma), the steps that start above
    the given schedule's level at round(X% N) on their first visit of that noise, refined on the
    last of them that starts at or above the schedule's 0/20/40% levels."""
    if not by_noise:
        guided = fraction_of(steps_run, fraction)
        return tuple(range(guided)), refinement_steps(steps_run, guided)
    nominal = [float(s) for s in seen.sigmas[-1]][-(steps_run + 1):]  # img2img runs the schedule's tail
    n = len(nominal) - 1
    edge = nominal[fraction_of(n, fraction)]
    reached, guided = float("inf"), []
    for k, d in enumerate(seen.reported):
        start = float(d["sigma_hat"])
        if start <= reached * (1 + 1e-5) and start > edge * (1 + 1e-5):
            guided.append(k)
        reached = min(reached, float(d["sigma"]))
    refined = {max(k for k in guided if float(seen.reported[k]["sigma_hat"]) >= nominal[r] * (1 - 1e-5))
               for r in refinement_steps(n, fraction_of(n, fraction))}
    return tuple(guided), refined


CASES = [(s.name, 20, None) for s in sd_samplers.all_samplers] + [
    ("DDIM", 30, None), ("PLMS", 30, None), ("UniPC", 30, None), ("Restart", 50, None),  # 30: 1000 // 30 gives 31 timesteps
    *[(name, 40, 0.5) for name in ("Euler", "DPM++ 2M", "Restart", "DDIM", "PLMS", "UniPC", "LCM", "DPM fast")],
]


@pytest.mark.parametrize("sampler,steps,denoising", CASES, ids=[f"{s}-{n}" + (f"-img2img{d}" if d else "") for s, n, d in CASES])
def test_every_sampler_guides_the_steps_the_hint_names_once_each(webui, monkeypatch, sampler, steps, denoising):
    """Each step once, in order, on the latent the sampler reports (and continues from) for that
    step at its own sigma; the steps guided and refined are those the rule gives for what the
    sampler really ran (Restart: by noise level) and those the hint under the sliders names."""
    seen = watch(monkeypatch)
    kwargs = dict(prompt=PROMPT, seed=SEED, steps=steps, width=64, height=64, sampler_name=sampler)
    if denoising is not None:
        kwargs.update(img2img=True, denoising_strength=denoising, init_latent=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    _, res = webui.generate(tsam=dict(enabled=True, refine=True, guided_steps=60), **kwargs)
    assert torch.isfinite(res.latents[0]).all()
    steps_guided = [g[0] for g in seen.guided]
    assert steps_guided == sorted(set(steps_guided)), "each step once, in order"
    hint = steps_hint(60, True, steps, sampler, None, denoising)
    if sampler == "DPM adaptive":  # no fixed steps: its attempts count, the plan is for the steps asked
        assert steps_guided == list(range(len(steps_guided))) and 0 < len(steps_guided) <= fraction_of(steps, 0.6)
        assert f"Guides steps 1-{fraction_of(steps, 0.6)} of" in hint
        return
    steps_run = len(seen.reported)
    guided, refined = expected_from_the_run(seen, steps_run, by_noise=sampler == "Restart")
    assert tuple(steps_guided) == guided
    assert {g[0] for g in seen.guided if g[3]} == set(refined)
    assert f"Guides steps {_numbers(guided)} of " in hint and re.search(rf"of (the )?{steps_run}\b", hint), hint
    assert hint.endswith("refines at step " + ", ".join(str(k + 1) for k in sorted(refined)) + ".</span>")
    for step, x, c_in, _ in seen.guided:
        d = seen.reported[step]
        if float(d.get("sigma_hat", 0)):  # the callback reports the step's starting latent and sigma
            assert d["x"] is x, "the guided latent must be the one the step reports and continues from"
            assert math.sqrt(1 / c_in ** 2 - 1) == pytest.approx(float(d["sigma_hat"]), rel=1e-3)


def test_restart_at_20_steps_guides_down_to_60_percent_of_the_noise_and_not_its_restart_steps(webui, monkeypatch):
    seen = watch(monkeypatch)
    webui.generate(tsam=dict(enabled=True, refine=True), prompt=PROMPT, seed=SEED, steps=20, width=64, height=64,
                   sampler_name="Restart")
    starts = [float(d["sigma_hat"]) for d in seen.reported]
    guided = [g[0] for g in seen.guided]
    nominal_60 = float(seen.sigmas[-1][12])
    assert len(starts) == 20 and max(starts[9:18]) > nominal_60  # the restart segment goes back above it
    assert all(starts[k] > nominal_60 for k in guided) and guided == list(range(7)) and starts[7] <= nominal_60
    assert [g[0] for g in seen.guided if g[3]] == [0, 2, 4]
    assert float(seen.reported[4]["sigma_hat"]) >= float(seen.sigmas[-1][8]) > float(seen.reported[5]["sigma_hat"])
