"""Mirrors modules/sd_schedulers.py: the "Schedule type" list (``Scheduler``, ``schedulers``,
``schedulers_map``) with each type's sigma function, and the ``to_d`` it installs in
k-diffusion (no ``append_dims``: the samplers pass a 0-d sigma)."""

import dataclasses

import k_diffusion
import numpy as np
import torch
from scipy import stats

from modules import shared


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


k_diffusion.sampling.to_d = to_d


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: any
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    return inner_model.get_sigmas(n).to(device)


def sgm_uniform(n, sigma_min, sigma_max, inner_model, device):
    """n sigmas at timesteps evenly spaced from sigma_max's, the last one left out, then 0."""
    first, last = inner_model.sigma_to_t(torch.tensor(sigma_max)), inner_model.sigma_to_t(torch.tensor(sigma_min))
    levels = [inner_model.t_to_sigma(t) for t in torch.linspace(first, last, n + 1)[:-1]]
    return torch.FloatTensor(levels + [0.0]).to(device)


AYS_SIGMAS = {  # Align Your Steps' 10-step schedules
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
}


def get_align_your_steps_sigmas(n, sigma_min, sigma_max, device):
    sigmas = list(AYS_SIGMAS["sdxl" if shared.sd_model.is_sdxl else "sd1"])
    if n != len(sigmas):  # log-linear interpolation of the decreasing list to n points
        xs, ys = np.linspace(0, 1, len(sigmas)), np.log(sigmas[::-1])
        sigmas = np.append(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy(), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas).to(device)


def kl_optimal(n, sigma_min, sigma_max, device):
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    i = torch.arange(n + 1, device=device)
    return torch.tan(i / n * alpha_min + (1.0 - i / n) * alpha_max)


def simple_scheduler(n, sigma_min, sigma_max, inner_model, device):
    stride = len(inner_model.sigmas) / n
    levels = [float(inner_model.sigmas[-(1 + int(k * stride))]) for k in range(n)]
    return torch.FloatTensor(levels + [0.0]).to(device)


def normal_scheduler(n, sigma_min, sigma_max, inner_model, device, sgm=False, floor=False):
    first, last = inner_model.sigma_to_t(torch.tensor(sigma_max)), inner_model.sigma_to_t(torch.tensor(sigma_min))
    timesteps = torch.linspace(first, last, n + 1)[:-1] if sgm else torch.linspace(first, last, n)
    levels = [inner_model.t_to_sigma(t) for t in timesteps]
    return torch.FloatTensor(levels + [0.0]).to(device)


def ddim_scheduler(n, sigma_min, sigma_max, inner_model, device):
    stride = max(len(inner_model.sigmas) // n, 1)
    levels = [float(inner_model.sigmas[k]) for k in range(1, len(inner_model.sigmas), stride)]
    return torch.FloatTensor(levels[::-1] + [0.0]).to(device)


def beta_scheduler(n, sigma_min, sigma_max, inner_model, device):
    """Beta-distributed timesteps (Lee et al. 2024), alpha and beta from the options."""
    quantiles = [stats.beta.ppf(q, shared.opts.beta_dist_alpha, shared.opts.beta_dist_beta) for q in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([sigma_min + q * (sigma_max - sigma_min) for q in quantiles] + [0.0]).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", k_diffusion.sampling.get_sigmas_exponential),
    Scheduler("polyexponential", "Polyexponential", k_diffusion.sampling.get_sigmas_polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=["SGMUniform"]),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", get_align_your_steps_sigmas),
    Scheduler("simple", "Simple", simple_scheduler, need_inner_model=True),
    Scheduler("normal", "Normal", normal_scheduler, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim_scheduler, need_inner_model=True),
    Scheduler("beta", "Beta", beta_scheduler, need_inner_model=True),
]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
