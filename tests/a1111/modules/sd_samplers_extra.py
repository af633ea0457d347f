"""Mirrors modules/sd_samplers_extra.py ``restart_sampler`` (Restart sampling, Xu et al. 2023)
(same arithmetic in the same order, no progress bar): Heun steps (model, callback, model again on the Euler
estimate; Euler on the step to sigma 0). Without a ``restart_list`` and from 20 steps on it
replaces the schedule it gets by a Karras schedule of N - k * times steps between its last
non-zero sigma and its first, and after the step that reaches the sigma nearest 0.1 it inserts
``times`` restart segments: k Karras steps from the sigma nearest 2 back down to it (k = 9 and
once below 36 steps, N // 4 and twice from 36). Noise is added back before a step whose sigma
is above the last one reached."""

import k_diffusion.sampling
import torch


def _restart_schedule(sigmas, restart_list):
    """(old sigma, new sigma) of every step Restart runs, and the schedule it runs them on."""
    from k_diffusion.sampling import get_sigmas_karras
    n = sigmas.shape[0] - 1
    if restart_list is None:
        restart_list = {}
        if n >= 20:
            k, times = (n // 4, 2) if n >= 36 else (9, 1)
            sigmas = get_sigmas_karras(n - k * times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device)
            restart_list = {0.1: [k + 1, times, 2]}
    nearest = lambda level: int(torch.argmin(abs(sigmas - level), dim=0))
    at = {nearest(low): value for low, value in restart_list.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 not in at:
            continue
        length, times, high = at[i + 1]
        bottom, top = i + 1, nearest(high)
        if top < bottom:
            segment = get_sigmas_karras(length, sigmas[bottom].item(), sigmas[top].item(), device=sigmas.device)[:-1]
            for _ in range(times):
                pairs.extend(zip(segment[:-1], segment[1:]))
    return pairs


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1., restart_list=None):
    from k_diffusion.sampling import to_d
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    step_id = 0

    def heun_step(x, old_sigma, new_sigma, second_order=True):
        nonlocal step_id
        denoised = model(x, old_sigma * s_in, **extra_args)
        d = to_d(x, old_sigma, denoised)
        if callback is not None:
            callback({"x": x, "i": step_id, "sigma": new_sigma, "sigma_hat": old_sigma, "denoised": denoised})
        dt = new_sigma - old_sigma
        if new_sigma == 0 or not second_order:  # Euler
            x = x + d * dt
        else:  # Heun: the slope again at the Euler estimate, averaged
            x_euler = x + d * dt
            d_euler = to_d(x_euler, new_sigma, model(x_euler, new_sigma * s_in, **extra_args))
            x = x + (d + d_euler) / 2 * dt
        step_id += 1
        return x

    reached = None
    for old_sigma, new_sigma in _restart_schedule(sigmas, restart_list):
        if reached is not None and reached < old_sigma:  # a restart: noise back up to old_sigma
            x = x + k_diffusion.sampling.torch.randn_like(x) * s_noise * (old_sigma ** 2 - reached ** 2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        reached = new_sigma
    return x
