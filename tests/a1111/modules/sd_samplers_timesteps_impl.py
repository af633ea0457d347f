"""Mirrors modules/sd_samplers_timesteps_impl.py: ``ddim`` and ``plms`` as upstream, and
``unipc`` with UniPC's call structure (modules/models/diffusion/uni_pc): the model is
evaluated on the *predicted* next latent, which the corrector then rebuilds from the previous
latent; the callback reports the rebuilt latent, which the loop continues from. (The stand-in
uses first-order coefficients; upstream's are higher-order.)"""

import k_diffusion.sampling
import numpy as np
import torch


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.cpu().numpy()) / (1 - alphas.cpu()) * (1 - alphas.cpu() / alphas_prev.cpu().numpy()))
    extra_args = extra_args or {}
    s_in, s_x = x.new_ones((x.shape[0])), x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        sigma_t, sqrt_one_minus_at = sigmas[index].item() * s_x, sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt + sigma_t * k_diffusion.sampling.torch.randn_like(x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    extra_args = extra_args or {}
    s_in, s_x = x.new_ones([x.shape[0]]), x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def x_prev_and_pred_x0(e_t, index):
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * s_x * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1. - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts, t_next = timesteps[index].item() * s_in, timesteps[max(index - 1, 0)].item() * s_in
        e_t = model(x, ts, **extra_args)
        if len(old_eps) == 0:
            x_prev, _ = x_prev_and_pred_x0(e_t, index)
            e_t_prime = (e_t + model(x_prev, t_next, **extra_args)) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x_prev, pred_x0 = x_prev_and_pred_x0(e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None, is_img2img=False):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    extra_args = extra_args or {}
    steps = len(timesteps)
    grid = torch.linspace(float(timesteps[-1]) if is_img2img else 999.0, 0.0, steps + 1)

    def coeffs(t):
        a = alphas_cumprod[int(round(float(t)))]
        return a.sqrt(), (1 - a).sqrt()

    def data_prediction(x, t):
        eps = model(x, float(t) * x.new_ones(x.shape[0]), **extra_args)
        alpha, sigma = coeffs(t)
        return (x - sigma * eps) / alpha

    m_prev = data_prediction(x, grid[0])
    for i in range(steps):
        (a_prev, s_prev), (a_t, s_t) = coeffs(grid[i]), coeffs(grid[i + 1])
        noise_part = (x - a_prev * m_prev) / s_prev
        x_pred = a_t * m_prev + s_t * noise_part                      # predictor
        if i < steps - 1:
            model_t = data_prediction(x_pred, grid[i + 1])            # evaluated on the prediction
            x = a_t * (m_prev + model_t) / 2 + s_t * noise_part       # corrector: rebuilt from the previous x
            m_prev = model_t
        else:
            x = x_pred
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": m_prev})
    return x
