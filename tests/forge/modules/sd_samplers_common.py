"""Mirrors Forge's modules/sd_samplers_common.py: A1111's (``SamplerData``, ``Sampler``,
``setup_img2img_steps``, ``TorchHijack``: the A1111 stand-in's file) but for ``apply_refiner``
(:166), Forge's own: switched by sampling steps only, the UNet's sampling state cleaned up, the
refiner loaded through the loading parameters (``checkpoint_change`` + ``forge_model_reload``,
the base checkpoint's parameters back afterwards), extra networks activated again, new conds, and
``sampling_prepare`` for the refiner's UNet, which loads it for sampling."""

from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare
from modules import extra_networks, sd_models, shared
from modules.shared import opts
from reuse import a1111

a1111("modules/sd_samplers_common.py", globals())


def apply_refiner(cfg_denoiser, x):
    completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
    refiner_switch_at = cfg_denoiser.p.refiner_switch_at
    refiner_checkpoint_info = cfg_denoiser.p.refiner_checkpoint_info
    if refiner_switch_at is not None and completed_ratio < refiner_switch_at:
        return False
    if refiner_checkpoint_info is None or shared.sd_model.sd_checkpoint_info == refiner_checkpoint_info:
        return False
    if getattr(cfg_denoiser.p, "enable_hr", False):
        is_second_pass = cfg_denoiser.p.is_hr_pass
        if opts.hires_fix_refiner_pass == "first pass" and is_second_pass:
            return False
        if opts.hires_fix_refiner_pass == "second pass" and not is_second_pass:
            return False
        if opts.hires_fix_refiner_pass != "second pass":
            cfg_denoiser.p.extra_generation_params["Hires refiner"] = opts.hires_fix_refiner_pass
    cfg_denoiser.p.extra_generation_params["Refiner"] = refiner_checkpoint_info.short_title
    cfg_denoiser.p.extra_generation_params["Refiner switch at"] = refiner_switch_at
    sampling_cleanup(sd_models.model_data.get_sd_model().forge_objects.unet)
    base = sd_models.model_data.forge_loading_parameters
    sd_models.checkpoint_change(refiner_checkpoint_info)
    try:
        sd_models.forge_model_reload()
    finally:
        sd_models.model_data.forge_loading_parameters = base
    if not cfg_denoiser.p.disable_extra_networks:
        extra_networks.activate(cfg_denoiser.p, cfg_denoiser.p.extra_network_data)
    cfg_denoiser.p.setup_conds()
    cfg_denoiser.update_inner_model()
    sampling_prepare(sd_models.model_data.get_sd_model().forge_objects.unet, x=x)
    return True
