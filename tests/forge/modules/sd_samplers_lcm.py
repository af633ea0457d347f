"""Mirrors Forge's modules/sd_samplers_lcm.py: ``sample_lcm`` (one model call a step, callback,
then x = denoised + noise), ``LCMCompVisDenoiser`` (50 of the predictor's 1000 sigmas; only its
schedule matters, the UNet runs in ``sampling_function``) and ``LCMSampler``."""

import torch
from k_diffusion.external import DiscreteEpsDDPMDenoiser
from k_diffusion.sampling import append_zero, default_noise_sampler, trange

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, sd_samplers_kdiffusion, shared


class LCMCompVisDenoiser(DiscreteEpsDDPMDenoiser):
    def __init__(self, model):
        timesteps, original = 1000, 50
        self.skip_steps = timesteps // original
        alphas_cumprod = 1.0 / (model.forge_objects.unet.model.predictor.sigmas ** 2.0 + 1.0)
        valid = torch.zeros(original, dtype=torch.float32)
        for x in range(original):
            valid[original - 1 - x] = alphas_cumprod[timesteps - 1 - x * self.skip_steps]
        super().__init__(model, valid, quantize=None)
        self.predictor = model.forge_objects.unet.model.predictor

    def get_sigmas(self, n=None):
        if n is None:
            return append_zero(self.sigmas.flip(0))
        t = torch.linspace(self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min), n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma, quantize=None):
        dists = sigma.log() - self.log_sigmas.to(sigma)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        t = torch.clamp(((timestep - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(t)


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


class CFGDenoiserLCM(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = LCMCompVisDenoiser(shared.sd_model)
        return self.model_wrap


class LCMSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname, sd_model, options)
        self.model_wrap_cfg = CFGDenoiserLCM(self)
        self.model_wrap = self.model_wrap_cfg.inner_model


samplers_data_lcm = [sd_samplers_common.SamplerData("LCM", lambda model: LCMSampler(sample_lcm, model), ["k_lcm"], {})]
