"""Mirrors Forge's modules/sd_samplers_cfg_denoiser.py ``CFGDenoiser.forward(x, sigma, uncond,
cond, cond_scale, s_min_uncond, image_cond)`` (:156): the timestep samplers' rescaling of x to the
k-diffusion x of the timestep's sigma (``classic_ddim_eps_estimation``), the refiner switch
(``apply_refiner``, then the new conds; ``update_inner_model``, :93), the conds reconstructed at
``self.step``, the denoiser callback, the hires pass's own CFG scale (``p.hr_cfg``), one
``sampling_function`` call that runs the UNet itself, ``last_latent``, the after-CFG callback,
``step += 1``, and eps back for the timestep samplers. Inpainting (:184, :212): for every sampler
the UNet sees x * nmask + noisy_initial_latent * mask, the original latent noised to this sigma
with a fresh draw from the global generator, and the denoised result is blended with the
original latent (then the scripts' ``on_mask_blend``)."""

import torch

from backend.sampling.sampling_function import sampling_function
from modules import prompt_parser, sd_samplers_common
from modules.script_callbacks import AfterCFGCallbackParams, CFGDenoiserParams, cfg_after_cfg_callback, cfg_denoiser_callback
from modules.shared import opts, state


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.model_wrap = None
        self.mask = self.nmask = self.init_latent = None
        self.steps = self.total_steps = None
        self.step = 0
        self.image_cfg_scale = None
        self.sampler = sampler
        self.p = None
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None
        self.mask_before_denoising = False
        self.classic_ddim_eps_estimation = False

    @property
    def inner_model(self):
        raise NotImplementedError()

    def update_inner_model(self):
        self.model_wrap = None
        c, uc = self.p.get_conds()
        self.sampler.sampler_extra_args["cond"] = c
        self.sampler.sampler_extra_args["uncond"] = uc

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        original_x_device, original_x_dtype = x.device, x.dtype
        if self.classic_ddim_eps_estimation:
            acd = self.inner_model.inner_model.alphas_cumprod
            fake_sigmas = ((1 - acd) / acd) ** 0.5
            real_sigma = fake_sigmas[sigma.round().long().clip(0, int(fake_sigmas.shape[0]))]
            x = x * ((real_sigma ** 2.0 + 1.0) ** 0.5)[:, None, None, None]
            sigma = real_sigma
        if sd_samplers_common.apply_refiner(self, x):
            cond = self.sampler.sampler_extra_args["cond"]
            uncond = self.sampler.sampler_extra_args["uncond"]
        cond_composition, cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step) if uncond is not None else None
        if self.mask is not None:
            predictor = self.inner_model.inner_model.forge_objects.unet.model.predictor
            noisy_initial_latent = predictor.noise_scaling(sigma[:, None, None, None], torch.randn_like(self.init_latent).to(self.init_latent), self.init_latent, max_denoise=False)
            x = x * self.nmask + noisy_initial_latent * self.mask
        params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps, cond, uncond, self)
        cfg_denoiser_callback(params)
        if self.p.is_hr_pass:
            cond_scale = self.p.hr_cfg
        if opts.skip_early_cond > 0 and self.step / self.total_steps <= opts.skip_early_cond:
            cond_scale = 1.0
        elif (self.step % 2 or opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond:
            cond_scale = 1.0
        denoised, _cond_pred, _uncond_pred = sampling_function(self, params, cond_scale, cond_composition)
        if self.mask is not None:
            blended_latent = denoised * self.nmask + self.init_latent * self.mask
            if self.p.scripts is not None:
                from modules import scripts
                mba = scripts.MaskBlendArgs(denoised, self.nmask, self.init_latent, self.mask, blended_latent, denoiser=self, sigma=sigma)
                self.p.scripts.on_mask_blend(self.p, mba)
                blended_latent = mba.blended_latent
            denoised = blended_latent
        self.sampler.last_latent = denoised
        sd_samplers_common.store_latent(denoised)
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        denoised = after.x
        self.step += 1
        if self.classic_ddim_eps_estimation:
            return (x - denoised) / sigma[:, None, None, None]
        return denoised.to(device=original_x_device, dtype=original_x_dtype)
