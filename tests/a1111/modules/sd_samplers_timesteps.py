"""Mirrors modules/sd_samplers_timesteps.py: DDIM / PLMS / UniPC samplers whose denoiser passes
x straight to the UNet with an integer timestep as "sigma" (v-prediction models: converted to eps)."""

import inspect

import torch

from modules import devices, sd_samplers_common, sd_samplers_timesteps_impl, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser

samplers_timesteps = [
    ("DDIM", sd_samplers_timesteps_impl.ddim, ["ddim"], {}),
    ("DDIM CFG++", sd_samplers_timesteps_impl.ddim_cfgpp, ["ddim_cfgpp"], {}),
    ("PLMS", sd_samplers_timesteps_impl.plms, ["plms"], {}),
    ("UniPC", sd_samplers_timesteps_impl.unipc, ["unipc"], {}),
]

samplers_data_timesteps = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: CompVisSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_timesteps
]


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CompVisTimestepsVDenoiser(torch.nn.Module):
    """A v-prediction model's output turned into eps: sqrt(a_t) v + sqrt(1 - a_t) x_t."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def predict_eps_from_z_and_v(self, x_t, t, v):
        a = self.inner_model.alphas_cumprod[t.to(torch.int), None, None, None]
        return torch.sqrt(a) * v + torch.sqrt(1 - a) * x_t

    def forward(self, input, timesteps, **kwargs):
        return self.predict_eps_from_z_and_v(input, timesteps, self.inner_model.apply_model(input, timesteps, **kwargs))


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        a_t = self.alphas[sigma.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            denoiser = CompVisTimestepsVDenoiser if shared.sd_model.parameterization == "v" else CompVisTimestepsDenoiser
            self.model_wrap = denoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.eta_option_field, self.eta_infotext_field, self.eta_default = "eta_ddim", "Eta DDIM", 0.0
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        discard = self.config is not None and self.config.options.get("discard_next_to_last_sigma", False)
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard else 0
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps)), device=devices.device) + 1, 0, 999)

    def _run(self, p, steps, x, conditioning, unconditional_conditioning, image_conditioning, timesteps, img2img):
        extra = self.initialize(p)
        params = inspect.signature(self.func).parameters
        if "timesteps" in params:
            extra["timesteps"] = timesteps
        if "is_img2img" in params and img2img:
            extra["is_img2img"] = True
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=self.sampler_extra_args,
                                                             disable=False, callback=self.callback_state, **extra))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        a = shared.sd_model.alphas_cumprod[timesteps[t_enc]]
        xi = x * a.sqrt() + noise * (1 - a).sqrt()
        self.model_wrap_cfg.init_latent = x
        return self._run(p, t_enc + 1, xi, conditioning, unconditional_conditioning, image_conditioning, timesteps[:t_enc], True)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        return self._run(p, steps, x, conditioning, unconditional_conditioning, image_conditioning, self.get_timesteps(p, steps), False)
