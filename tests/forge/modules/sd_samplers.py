"""Mirrors Forge's modules/sd_samplers.py: k-diffusion, timestep, LCM and "alter" (DDPM) samplers in
one registry; ``find_sampler_config``, ``create_sampler``."""

from modules import sd_samplers_kdiffusion, sd_samplers_lcm, sd_samplers_timesteps
from modules_forge import alter_samplers

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion, *sd_samplers_timesteps.samplers_data_timesteps,
                *sd_samplers_lcm.samplers_data_lcm, *alter_samplers.samplers_data_alter]
all_samplers_map = {x.name: x for x in all_samplers}


def find_sampler_config(name):
    return all_samplers_map.get(name) if name is not None else all_samplers[0]


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    if model.is_sdxl and config.options.get("no_sdxl", False):
        raise Exception(f"Sampler {config.name} is not supported for SDXL")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler
