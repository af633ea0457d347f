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


@pytest.mark.parametrize("n", [20, 21, 9])
def test_dpm_fast_guides_the_first_call_of_each_solver_step(n):
    """DPM fast reports a step after its first model call, then makes the step's other calls
    (on derived latents): only the first, on the latent the step reports, starts the step."""
    torch.manual_seed(0)
    probe = Probe(profile_for("sample_dpm_fast", kwargs={"n": n}))
    sampling.sample_dpm_fast(probe, torch.randn(1, 4, 8, 8) * 14.6, 0.03, 14.6, n, callback=probe.callback, disable=True)
    steps = step_count("sample_dpm_fast", {"n": n}, 0)
    assert steps == len(probe.reported) == n // 3 + 1 and probe.calls == n
    assert [g[0] for g in probe.guided] == list(range(steps))
    for step, _sigma, x in probe.guided:
        assert probe.reported[step][1] is x


def test_unknown_second_order_sampler_follows_its_host_flag():
    assert profile_for("sample_something_new", second_order=True).evals_after_callback == 1
    assert profile_for("sample_something_new").evals_after_callback == 0


# --- which steps a pass runs, and which of them are guided -----------------------------------

from tsam_ext.core import schedule  # noqa: E402
from tsam_ext.core.samplers import restart_steps, unipc_profile  # noqa: E402
from tsam_ext.core.schedule import PassSteps, fraction_of, make_plan, refinement_steps, step_sizes  # noqa: E402


def runs_of(sigmas):
    levels = tuple(float(s) for s in sigmas)
    return PassSteps(levels, tuple(zip(levels[:-1], levels[1:])))


@pytest.mark.parametrize("make_sigmas", [sampling.get_sigmas_karras, sampling.get_sigmas_exponential],
                         ids=["karras", "exponential"])
def test_noise_levels_give_the_count_plan_where_a_sampler_runs_what_it_gets(make_sigmas):
    """Read by noise level, a pass that runs its schedule is planned exactly as by step count:
    steps 0 .. round(X% N) - 1, alpha_t over N steps, refinement at round(0/20/40% N)."""
    for n in (1, 2, 5, 7, 10, 19, 20, 33, 50, 51):
        sigmas = make_sigmas(n, 0.0292, 14.6146)
        for fraction in (0.0, 0.01, 0.3, 0.5, 0.6, 0.75, 1.0):
            by_level, by_count = make_plan(runs_of(sigmas), 5.0, fraction), make_plan(n, 5.0, fraction)
            guided = fraction_of(n, fraction)
            assert by_level.guided == by_count.guided == tuple(range(guided)), (n, fraction)
            assert by_level.refine_at == by_count.refine_at == refinement_steps(n, guided)
            assert torch.equal(by_level.alphas, step_sizes(5.0, n)) and torch.equal(by_count.alphas, step_sizes(5.0, n))


def probe_restart(sigmas):
    """(start, end) sigma of every step the Restart stand-in runs (its callback's sigma_hat, sigma)."""
    from modules import sd_samplers_extra
    seen = []
    sd_samplers_extra.restart_sampler(lambda x, s, **_: x * 0.5, torch.randn(1, 4, 4, 4) * sigmas[0], sigmas,
                                      callback=lambda d: seen.append((float(d["sigma_hat"]), float(d["sigma"]))))
    return seen


@pytest.mark.parametrize("n,start", [(10, 0), (19, 0), (20, 0), (25, 0), (35, 0), (36, 0), (50, 0), (60, 19)])
def test_restart_steps_are_those_restart_runs(n, start):
    """``restart_steps`` (the plan's and the hint's model of Restart) against the mirrored sampler,
    for txt2img schedules and an img2img tail (``start`` > 0), below and above 20 and 36 steps."""
    sigmas = sampling.get_sigmas_karras(n, 0.0292, 14.6146)[start:]
    modelled = restart_steps(sigmas)
    assert modelled.nominal == tuple(float(s) for s in sigmas)
    observed = probe_restart(sigmas)
    assert len(modelled.runs) == len(observed) == len(sigmas) - 1
    torch.testing.assert_close(torch.tensor(modelled.runs), torch.tensor(observed), rtol=1e-6, atol=0)
    assert any(not first for first in modelled.first_visits()) == (len(sigmas) - 1 >= 20)


@pytest.mark.parametrize("n,guided,refined", [
    # 20 steps: Restart runs 11 Karras steps 14.6 -> 0 with 9 restart steps (2.23 -> 0.074) after
    # the one that reaches 0.074. 60% ends at the nominal sigma_12 = 0.565: the steps starting at
    # 14.6, 9.56, 6.08, 3.75, 2.23, 1.28, 0.69 are guided; 0.355 is not, nor any restart step.
    # Refinement at the nominal 0% / 20% / 40% levels 14.6, 5.79, 1.99 falls on the steps under
    # way there: those starting at 14.6, 6.08 and 2.23.
    (20, range(0, 7), (0, 2, 4)),
    # 50 steps: 26 Karras steps and two 12-step restart segments; sigma_30 = 0.641, the main
    # steps down from 0.693 (the 16th) are guided; 20% / 40% at 5.97 / 2.14 -> steps from 6.08 / 2.23.
    (50, range(0, 16), (0, 5, 10)),
])
def test_restart_is_guided_over_the_noise_the_user_asked_for(n, guided, refined):
    sigmas = sampling.get_sigmas_karras(n, 0.0292, 14.6146)
    run = restart_steps(sigmas)
    plan = make_plan(run, 5.0, 0.6)
    assert plan.steps == n and plan.guided == tuple(guided) and plan.refine_at == frozenset(refined)
    edge = float(sigmas[fraction_of(n, 0.6)])
    starts = [s for s, _ in run.runs]
    assert all(starts[k] > edge for k in plan.guided)
    assert starts[plan.guided[-1] + 1] <= edge  # the first step at or below 60% of the noise ends guidance
    # each guided step's alpha is that of the nominal step its start lies in
    for k in plan.guided:
        j = max(j for j in range(n) if float(sigmas[j]) >= starts[k] * (1 - schedule.TOLERANCE))
        assert float(sigmas[j + 1]) < starts[k] and plan.alphas[k] == step_sizes(5.0, n)[j]
    # the step count of today's plan put guidance down to sigma 0.17 and into the restart segment
    assert make_plan(n, 5.0, 0.6).guided != plan.guided


def test_restart_segments_are_never_guided_but_the_steps_after_them_can_be():
    """At 100% every level is guided once: the main descent and the last steps below the restart
    point, never the restart segments that go back up over noise already guided."""
    sigmas = sampling.get_sigmas_karras(20, 0.0292, 14.6146)
    run = restart_steps(sigmas)
    plan = make_plan(run, 5.0, 1.0)
    first = run.first_visits()
    assert plan.guided == tuple(k for k in range(20) if first[k]) == tuple(range(9)) + (18, 19)


@pytest.mark.parametrize("variant,order,kept", [("bh1", 3, 0), ("bh2", 1, 0), ("vary_coeff", 3, 1), ("vary_coeff", 2, 1),
                                                ("vary_coeff", 1, float("inf"))])
def test_unipc_profile_knows_which_correctors_keep_the_move(variant, order, kept):
    profile = unipc_profile(variant, order)
    assert profile.kept_updates == kept
    assert not profile.rebuilds_without_move(1)  # the first call sees the initial latent itself
    assert [profile.rebuilds_without_move(c) for c in range(2, 6)] == [c - 1 > kept for c in range(2, 6)]
