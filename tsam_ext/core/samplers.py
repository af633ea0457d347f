"""How each sampler runs a pass: which model calls start its steps, and which steps it runs.

Calls. Samplers report a step through their ``callback`` (k-diffusion's ``{'x', 'i', ...}``).
First-order samplers make one model call per step; k-diffusion's second-order samplers (and
Restart's Heun steps) call the model on the step's latent, then the callback, then once more on
a derived latent (not a step of its own); Forge's Heun++ makes two more (one at the
second-to-last step, none at the last); DPM fast reports a step after its first model call and
then makes up to two more; UniPC evaluates the model on its predicted next latent before the
previous step's callback and then rebuilds that latent with its corrector.

Steps. Every sampler runs the steps of the schedule it receives (DDIM and PLMS receive every
(1000 // steps)-th DDPM timestep and run one step fewer than that; UniPC runs as many; DPM fast
runs n // 3 + 1 solver steps), except Restart, which runs a shorter schedule with restart
segments inserted (``restart_steps``).
"""

import math
from dataclasses import dataclass

import torch

from .schedule import PassSteps


@dataclass(frozen=True)
class SamplerProfile:
    evals_after_callback: int = 0       # model calls a step makes after its callback,
    evals_after: tuple[int, ...] = ()   # or per step, where that varies (DPM fast)
    evaluates_prediction: bool = False  # calls after the first see a predicted latent that the corrector rebuilds,
    kept_updates: float = 0             # except in the first ``kept_updates``, whose corrector starts from it

    def step_of_call(self, calls: int, callbacks: int, calls_since_callback: int) -> int | None:
        """The sampler step a model call starts, or None for an intermediate call.

        ``calls`` counts this call (1-based); ``callbacks`` the steps reported finished.
        """
        if self.evaluates_prediction:
            return calls - 1
        if callbacks == 0:
            return 0 if calls == 1 else None
        last = callbacks - 1
        after = self.evals_after[last] if last < len(self.evals_after) else self.evals_after_callback
        return callbacks if calls_since_callback == 1 + after else None

    def rebuilds_without_move(self, calls: int) -> bool:
        """Whether the latent model call ``calls`` saw (moved in place by T-SAM) is rebuilt
        without that move, which then is due on the rebuilt latent the step reports."""
        return self.evaluates_prediction and calls - 1 > self.kept_updates


def unipc_profile(variant: str, order: int) -> SamplerProfile:
    """UniPC under A1111's ``uni_pc_variant`` and ``uni_pc_order``. Its update u (making step u's
    latent) calls the model on the predicted latent, then corrects: bh1 / bh2 rebuild from the
    previous latent, so the move is lost; vary_coeff's order-1 updates (its first, and every one
    at order 1) rebuild from the very latent the model saw, so the move stays in."""
    kept = 0 if variant != "vary_coeff" else math.inf if order <= 1 else 1
    return SamplerProfile(evaluates_prediction=True, kept_updates=kept)


def dpm_fast_steps(n: int) -> int:
    """The solver steps k-diffusion's DPM fast makes for ``n`` model calls."""
    return n // 3 + 1


def dpm_fast_profile(n: int) -> SamplerProfile:
    """k-diffusion's DPM fast for ``n`` model calls: ``dpm_fast_steps`` of order 3 (the last ones 2
    and 1, or n % 3); each reports after its first model call, then makes order - 1 more."""
    steps = dpm_fast_steps(n)
    orders = [3] * (steps - 2) + [2, 1] if n % 3 == 0 else [3] * (steps - 1) + [n % 3]
    return SamplerProfile(evals_after=tuple(order - 1 for order in orders))


def heunpp2_profile(steps: int) -> SamplerProfile:
    """Forge's Heun++ (``sample_heunpp2``) over ``steps`` steps: step j evaluates up to two of
    the sigmas after its own, at most the steps - 1 - j that are left."""
    return SamplerProfile(evals_after=tuple(min(2, steps - 1 - j) for j in range(steps)))


SECOND_ORDER = frozenset({"sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                          "sample_dpmpp_sde", "restart_sampler"})
PROFILES = {name: SamplerProfile(evals_after_callback=1) for name in SECOND_ORDER}


def function_name(func) -> str:
    """A sampler function's name: k-diffusion's ``sample_*`` strings or the function itself."""
    return func if isinstance(func, str) else getattr(func, "__name__", type(func).__name__)


def profile_for(func, second_order: bool = False, unipc: tuple[str, int] = ("bh1", 3), kwargs=None) -> SamplerProfile:
    """The profile of a sampler function called with ``kwargs``; an unknown one is second-order if
    its host says so. ``unipc``: the UniPC (variant, order) in use."""
    name = function_name(func)
    if name == "unipc":
        return unipc_profile(*unipc)
    if name == "sample_dpm_fast" and kwargs and "n" in kwargs:
        return dpm_fast_profile(int(kwargs["n"]))
    if name == "sample_heunpp2" and kwargs and "sigmas" in kwargs:
        return heunpp2_profile(len(kwargs["sigmas"]) - 1)
    return PROFILES.get(name, SamplerProfile(evals_after_callback=int(second_order)))


def step_count(func, kwargs: dict, default: int) -> int:
    """Sampler steps a call of the sampler function makes, read from the arguments it gets."""
    name = function_name(func)
    if "sigmas" in kwargs:
        return len(kwargs["sigmas"]) - 1
    if "timesteps" in kwargs:
        return len(kwargs["timesteps"]) - (0 if name == "unipc" else 1)
    if "n" in kwargs:  # DPM fast
        return dpm_fast_steps(kwargs["n"])
    return default


def reads_levels(func) -> bool:
    """Whether the steps the sampler function runs depend on the noise levels it gets (Restart)."""
    return function_name(func) == "restart_sampler"


def pass_steps(func, kwargs: dict, default: int) -> "int | PassSteps":
    """The steps a call of the sampler function runs: their count, or, where that is not the
    schedule it receives (Restart), their noise levels against that schedule."""
    if reads_levels(func) and "sigmas" in kwargs:
        return restart_steps(kwargs["sigmas"])
    return step_count(func, kwargs, default)


RESTART_FROM = 20  # Restart adds segments from 20 steps on


def restart_steps(sigmas) -> PassSteps:
    """The steps A1111's Restart (sd_samplers_extra.restart_sampler, its automatic restart list)
    runs for the schedule ``sigmas`` [N + 1] it receives. From 20 steps on it runs a Karras
    schedule of N - k * times steps over the same range, and after the step that reaches the
    sigma nearest 0.1 it goes back up to the sigma nearest 2 and runs k Karras steps down to
    it again, ``times`` times (k = 9, once, below 36 steps; N // 4, twice, from 36): N steps."""
    from k_diffusion.sampling import get_sigmas_karras  # the WebUI's k-diffusion, as Restart itself

    nominal = torch.as_tensor(sigmas, dtype=torch.float32).cpu()
    levels = tuple(float(s) for s in nominal)
    n = len(levels) - 1
    if n < RESTART_FROM:
        return PassSteps(levels, tuple(zip(levels[:-1], levels[1:])))
    k, times = (n // 4, 2) if n >= 36 else (9, 1)
    main = get_sigmas_karras(n - k * times, levels[-2], levels[0])
    low, high = (int(torch.argmin((main - level).abs())) for level in (0.1, 2.0))
    segment = [float(s) for s in get_sigmas_karras(k + 1, float(main[low]), float(main[high]))[:-1]]
    main = [float(s) for s in main]
    runs = []
    for i in range(len(main) - 1):
        runs.append((main[i], main[i + 1]))
        if i + 1 == low and high < low:
            runs += list(zip(segment[:-1], segment[1:])) * times
    return PassSteps(levels, tuple(runs))


def img2img_steps(steps: int, denoising: float, fixed: bool) -> tuple[int, int]:
    """A1111's ``setup_img2img_steps``: (length of the schedule, t_enc). ``fixed``: the option
    img2img_fix_steps, or a hires pass (whose steps are given)."""
    if fixed:
        return (int(steps / min(denoising, 0.999)) if denoising > 0 else 0), steps - 1
    return steps, int(min(denoising, 0.999) * steps)


DDPM_STEPS = 1000  # timestep samplers take every (1000 // steps)-th of them, from 1


def received(takes, steps: int, denoising: float | None = None, fixed: bool = False, discard: bool = False,
             sigmas=None) -> tuple[dict, int]:
    """The step arguments A1111 1.10.1 gives a sampler function whose parameters include ``takes``
    ('sigmas', 'n', 'timesteps'), and the steps it launches with (``default`` of ``pass_steps``):
    txt2img at ``steps``, or img2img / hires at ``denoising`` (the tail of the schedule from
    t_enc). ``discard``: always_discard_next_to_last_sigma (timestep samplers get one more
    timestep). ``sigmas(n)`` [n + 1] is the schedule's noise, needed where ``reads_levels``."""
    sigmas = sigmas or (lambda n: torch.linspace(float(n), 0.0, n + 1))  # only the count matters
    if denoising is None:
        total, t_enc = steps, steps - 1
        timesteps = len(range(0, DDPM_STEPS, DDPM_STEPS // (steps + int(discard))))  # 31 for 30 steps
    else:
        total, t_enc = img2img_steps(steps, denoising, fixed)
        timesteps = t_enc
    schedule = sigmas(total)[total - t_enc - 1:]
    given = {"sigmas": schedule, "n": len(schedule) - 1, "timesteps": range(timesteps)}
    return {k: v for k, v in given.items() if k in takes}, t_enc + 1
