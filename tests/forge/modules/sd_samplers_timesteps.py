"""Mirrors Forge's modules/sd_samplers_timesteps.py: DDIM / PLMS / UniPC (DDIM CFG++ is left out
here) over ``CFGDenoiserTimesteps``, whose forward gets a timestep as ``sigma`` and rescales x to
the k-diffusion x of that timestep's sigma (``classic_ddim_eps_estimation``); the timestep
denoiser sets the model's ``alphas_cumprod`` from the predictor's sigmas; ``sample`` /
``sample_img2img`` run between ``sampling_prepare`` and ``sampling_cleanup``. The rest is the A1111
stand-in's file."""

import torch

from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare
from modules import shared
from reuse import a1111

a1111("modules/sd_samplers_timesteps.py", globals())


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        self.inner_model.alphas_cumprod = 1.0 / (model.forge_objects.unet.model.predictor.sigmas ** 2.0 + 1.0)

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):  # noqa: F821 - Forge's, from modules.sd_samplers_cfg_denoiser
    def __init__(self, sampler):
        super().__init__(sampler)
        self.classic_ddim_eps_estimation = True

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(CompVisSampler):  # noqa: F821 - the A1111 stand-in's, with Forge's denoiser
    def sample(self, p, x, *args, **kwargs):
        unet = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet, x=x)
        samples = super().sample(p, x, *args, **kwargs)
        sampling_cleanup(unet)
        return samples

    def sample_img2img(self, p, x, *args, **kwargs):
        unet = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet, x=x)
        samples = super().sample_img2img(p, x, *args, **kwargs)
        sampling_cleanup(unet)
        return samples
