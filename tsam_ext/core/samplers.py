"""How each sampler calls the model, so that every sampler step is guided once, on the latent
the sampler continues from.

Samplers report a finished step through their ``callback`` (k-diffusion's ``{'x', 'i', ...}``).
First-order samplers make one model call per step; k-diffusion's second-order samplers call
the model on the step's latent, then the callback, then once more on a derived latent (that
call is not a step of its own; Forge's Heun++ makes two, one at the second-to-last step and none
at the last); UniPC evaluates the model on its predicted next latent before
the previous step's callback and then rebuilds that latent with its corrector.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerProfile:
    evals_after_callback: int = 0      # model calls a step makes after its callback
    evaluates_prediction: bool = False # calls after the first see a predicted latent that is rebuilt
    fewer_at_end: bool = False         # each step evaluates at most the sigmas left to it (Forge's Heun++)
    steps: int = 0                     # the steps of the pass (read by fewer_at_end profiles)

    def step_of_call(self, calls: int, callbacks: int, calls_since_callback: int) -> int | None:
        """The sampler step a model call starts, or None for an intermediate call.

        ``calls`` counts this call (1-based); ``callbacks`` the steps reported finished.
        """
        if self.evaluates_prediction:
            return calls - 1
        if callbacks == 0:
            return 0 if calls == 1 else None
        extra = self.evals_after_callback
        if self.fewer_at_end:  # step j has sigmas j+1 .. steps after its own: at most steps - 1 - j more calls
            extra = min(extra, self.steps - callbacks)
        return callbacks if calls_since_callback == 1 + extra else None


SECOND_ORDER = frozenset({"sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                          "sample_dpmpp_sde", "restart_sampler"})
PROFILES = {name: SamplerProfile(evals_after_callback=1) for name in SECOND_ORDER}
PROFILES["unipc"] = SamplerProfile(evaluates_prediction=True)
PROFILES["sample_heunpp2"] = SamplerProfile(evals_after_callback=2, fewer_at_end=True)  # Forge's Heun++ (HeunPP2)


def function_name(func) -> str:
    """A sampler function's name: k-diffusion's ``sample_*`` strings or the function itself."""
    return func if isinstance(func, str) else getattr(func, "__name__", type(func).__name__)


def profile_for(func, second_order: bool = False) -> SamplerProfile:
    """The profile of a sampler function; an unknown one is second-order if its host says so."""
    return PROFILES.get(function_name(func), SamplerProfile(evals_after_callback=int(second_order)))


def step_count(func, kwargs: dict, default: int) -> int:
    """Sampler steps a call of the sampler function makes, read from the arguments it gets."""
    name = function_name(func)
    if "sigmas" in kwargs:
        return len(kwargs["sigmas"]) - 1
    if "timesteps" in kwargs:
        return len(kwargs["timesteps"]) - (0 if name == "unipc" else 1)
    if "n" in kwargs:  # DPM fast: floor(n / 3) + 1 solver steps of order 3, 2 or 1
        return kwargs["n"] // 3 + 1
    return default
