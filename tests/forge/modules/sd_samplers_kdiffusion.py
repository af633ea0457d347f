"""Mirrors Forge's modules/sd_samplers_kdiffusion.py: A1111's sampler table plus HeunPP2, IPNDM,
IPNDM_V and DEIS (kept where its k_diffusion has them), a denoiser whose inner model is
``k_diffusion.external.ForgeScheduleLinker`` (the UNet predictor's sigmas; the UNet itself runs in
``sampling_function``), and ``sample`` / ``sample_img2img`` between ``sampling_prepare`` (which
loads the UNet patcher: LoRA merge) and ``sampling_cleanup``; ``predictor.noise_scaling`` makes
the same first latent as A1111's. The rest is the A1111 stand-in's file."""

import k_diffusion.sampling

from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare
from k_diffusion_forge import ForgeScheduleLinker
from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared
from reuse import a1111

a1111("modules/sd_samplers_kdiffusion.py", globals())

samplers_k_diffusion = samplers_k_diffusion + [  # noqa: F821 - from the A1111 stand-in's file
    ("HeunPP2", "sample_heunpp2", ["heunpp2"], {}),
    ("IPNDM", "sample_ipndm", ["ipndm"], {}),
    ("IPNDM_V", "sample_ipndm_v", ["ipndm_v"], {}),
    ("DEIS", "sample_deis", ["deis"], {}),
]
samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
    if callable(funcname) or hasattr(k_diffusion.sampling, funcname)
]


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = ForgeScheduleLinker(shared.sd_model.forge_objects.unet.model.predictor)
            self.model_wrap.inner_model = shared.sd_model
        return self.model_wrap


class KDiffusionSampler(KDiffusionSampler):  # noqa: F821 - the A1111 stand-in's, with Forge's denoiser
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
