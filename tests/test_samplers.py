"""Every sampler step is guided once, on the latent the sampler continues from: the call
pattern of k-diffusion's real samplers against the profiles."""

import pytest
import torch

from tsam_ext.runtime import kdiffusion
from tsam_ext.core.samplers import profile_for, step_count

sampling, _ = kdiffusion.load()

# (A1111 label, k-diffusion function, extra kwargs); the second-order ones are A1111's "second_order"
K_SAMPLERS = [
    ("Euler", "sample_euler", {}), ("Euler a", "sample_euler_ancestral", {}), ("LMS", "sample_lms", {}),
    ("Heun", "sample_heun", {}), ("DPM2", "sample_dpm_2", {}), ("DPM2 a", "sample_dpm_2_ancestral", {}),
    ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", {}), ("DPM++ 2M", "sample_dpmpp_2m", {}),
    ("DPM++ SDE", "sample_dpmpp_sde", {}), ("DPM++ 2M SDE", "sample_dpmpp_2m_sde", {}),
    ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}), ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", {}),
    ("Heun churn", "sample_heun", {"s_churn": 1.0}),
]


class Probe:
    """A model that records the calls a sampler makes and the steps the profile would guide."""

    def __init__(self, profile):
        self.profile, self.calls, self.callbacks, self.since = profile, 0, 0, 0
        self.guided = []  # (step, sigma, x tensor)
        self.reported = []  # callback's (i, x tensor)

    def __call__(self, x, sigma, **_):
        self.calls += 1
        self.since += 1
        step = self.profile.step_of_call(self.calls, self.callbacks, self.since)
        if step is not None:
            self.guided.append((step, float(sigma[0]), x))
        return x * 0.8

    def callback(self, d):
        self.reported.append((d["i"], d["x"]))
        self.callbacks += 1
        self.since = 0


@pytest.mark.parametrize("label,name,kwargs", K_SAMPLERS, ids=[s[0] for s in K_SAMPLERS])
def test_each_step_guided_once_on_the_sampler_state(label, name, kwargs):
    torch.manual_seed(0)
    sigmas = sampling.get_sigmas_karras(8, 0.03, 14.6)
    probe = Probe(profile_for(name))
    getattr(sampling, name)(probe, torch.randn(1, 4, 8, 8) * sigmas[0], sigmas, callback=probe.callback, disable=True, **kwargs)
    steps = step_count(name, {"sigmas": sigmas}, 0)
    assert [g[0] for g in probe.guided] == list(range(steps))
    for step, sigma, x in probe.guided:
        i, reported = probe.reported[step]
        assert i == step
        assert reported is x, "the guided call must see the tensor the sampler reports (and continues from)"
        assert sigma >= float(sigmas[step]) - 1e-6  # the step's own sigma (sigma_hat >= sigma with churn)


def test_dpm_fast_counts_solver_steps():
    torch.manual_seed(0)
    probe = Probe(profile_for("sample_dpm_fast"))
    sampling.sample_dpm_fast(probe, torch.randn(1, 4, 8, 8) * 14.6, 0.03, 14.6, 20, callback=probe.callback, disable=True)
    steps = step_count("sample_dpm_fast", {"n": 20}, 0)
    assert steps == len(probe.reported) == 7
    assert [g[0] for g in probe.guided][:steps] == list(range(steps))  # a final call after the last step is no step


def test_unknown_second_order_sampler_follows_its_host_flag():
    assert profile_for("sample_something_new", second_order=True).evals_after_callback == 1
    assert profile_for("sample_something_new").evals_after_callback == 0
