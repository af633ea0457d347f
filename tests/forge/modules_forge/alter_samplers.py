"""Mirrors modules_forge/alter_samplers.py: ``DDPM``, a k-diffusion sampler over
backend/modules/k_diffusion_extra.py's ``sample_ddpm``."""

from backend.modules import k_diffusion_extra
from modules import sd_samplers_common, sd_samplers_kdiffusion


class AlterSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    def __init__(self, sd_model, sampler_name):
        self.sampler_name = sampler_name
        self.unet = sd_model.forge_objects.unet
        super().__init__(getattr(k_diffusion_extra, f"sample_{sampler_name}"), sd_model, None)


samplers_data_alter = [sd_samplers_common.SamplerData("DDPM", lambda m: AlterSampler(m, "ddpm"), ["ddpm"], {})]
