"""Mirrors Forge's modules/sd_samplers_lcm.py: A1111's ``sample_lcm``, ``CFGDenoiserLCM`` and
``LCMSampler`` as they were (the A1111 stand-in's file), over Forge's ``LCMCompVisDenoiser``
(50 of the predictor's 1000 sigmas; only its schedule matters, the UNet runs in
``sampling_function``)."""

import torch
from k_diffusion.external import DiscreteEpsDDPMDenoiser
from k_diffusion.sampling import append_zero

from reuse import a1111

a1111("modules/sd_samplers_lcm.py", globals())


class LCMCompVisDenoiser(DiscreteEpsDDPMDenoiser):  # Forge's, replacing A1111's: CFGDenoiserLCM builds it
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
