"""The plan of the sampling pass the WebUI would run for a sampler, steps, schedule type and
(img2img) denoising strength, before it runs: for the steps hint under the sliders. The
arithmetic is the guided pass's own (``core.samplers.received`` / ``pass_steps``,
``core.schedule.make_plan``); this module only looks up what the WebUI decides: the sampler's
function (its parameters say which step arguments it gets) and, for Restart, the noise schedule
of the chosen type. A1111 1.10 and Forge keep the same sampler tables and
``KDiffusionSampler.get_sigmas``.
"""

import inspect
import types

import k_diffusion.external
import k_diffusion.sampling
import torch

from modules import sd_samplers, sd_samplers_kdiffusion, shared

from ..core.samplers import pass_steps, reads_levels, received
from ..core.schedule import PassSteps, Plan, Refinement, make_plan
from ..core.zspace import sd_alphas_cumprod


def sampler_function(label: str):
    """The function the sampler ``label`` runs and its options, from the WebUI's sampler tables."""
    config = sd_samplers.find_sampler_config(label)
    if config is None:
        return None, {}
    for table in _tables():
        for name, func, _aliases, _options in table:
            if name == config.name:
                return (getattr(k_diffusion.sampling, func) if isinstance(func, str) else func), config.options
    return None, config.options


def _tables():
    from modules import sd_samplers_lcm, sd_samplers_timesteps
    return sd_samplers_kdiffusion.samplers_k_diffusion, sd_samplers_timesteps.samplers_timesteps, sd_samplers_lcm.samplers_lcm


def sd_noise() -> torch.Tensor:
    """sigma [1000] of SD's noise schedule (scaled-linear betas 0.00085 .. 0.012: SD 1.x, 2.x and XL)."""
    alphas_cumprod = sd_alphas_cumprod()
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def schedule(config_options: dict, scheduler: str | None):
    """n -> the sigmas [n + 1] the WebUI's ``KDiffusionSampler.get_sigmas`` makes for this schedule
    type, run on SD's noise schedule (the options it reads included)."""
    sampler = types.SimpleNamespace(config=types.SimpleNamespace(options=config_options),
                                    model_wrap=k_diffusion.external.DiscreteSchedule(sd_noise(), quantize=True))
    p = types.SimpleNamespace(is_hr_pass=False, scheduler=scheduler, hr_scheduler=None, sampler_noise_scheduler_override=None,
                              extra_generation_params={})
    return lambda n: sd_samplers_kdiffusion.KDiffusionSampler.get_sigmas(sampler, p, n)


def plan_for(sampler: str, steps: int, scheduler: str | None, denoising: float | None, guided_fraction: float,
             refine: bool) -> tuple[Plan, "int | PassSteps"] | None:
    """The plan (without step sizes) of a txt2img pass, or of img2img at ``denoising``, and the
    steps it is made for; None for a sampler the WebUI does not know."""
    func, options = sampler_function(sampler)
    if func is None or steps < 1:
        return None
    given, launched = received(inspect.signature(func).parameters, steps, denoising,
                               fixed=bool(shared.opts.img2img_fix_steps),
                               discard=bool(shared.opts.always_discard_next_to_last_sigma),
                               sigmas=schedule(options, scheduler) if reads_levels(func) else None)
    run = pass_steps(func, given, launched)
    return make_plan(run, 0.0, guided_fraction, Refinement() if refine else None), run
