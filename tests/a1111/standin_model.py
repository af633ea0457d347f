"""What the WebUI's ``shared.sd_model`` is, as far as the adapter sees it, for each family, built
over the runtime's real architectures and then hijacked (``sd_hijack.model_hijack.hijack``) as
sd_models.load_model does, with the flags ``set_model_type`` sets:

- SD 1.x / SD 2.x: ldm's ``LatentDiffusion`` (``model.diffusion_model`` = the real ldm UNet,
  ``apply_model``, ``alphas_cumprod``, ``parameterization``); ``cond_stage_model`` becomes
  ``FrozenCLIPEmbedderWithCustomWords`` over transformers' CLIP (SD 1.x) or
  ``FrozenOpenCLIPEmbedderWithCustomWords`` over ldm's real ``FrozenOpenCLIPEmbedder`` (SD 2.x),
  the token embedding ``EmbeddingsWithFixes``.
- SDXL: sgm's ``DiffusionEngine`` (stand-in in tests/a1111/sgm) extended by ``extend_sdxl``;
  ``conditioner`` holds CLIP-L, bigG and three size embedders, the text ones wrapped, and is
  also ``cond_stage_model`` (the refiner, with bigG only, gets that embedder).

The stand-in has no VAE: ``first_stage_model`` passes latents through (lowvram hooks it) and
encodes pixels [B, 3, H, W] to latents [B, 4, H/8, W/8] by a fixed projection (for extensions
that encode a control image, as ControlNet's reference-only does).
"""

import torch
from torch import nn

import sgm.models.diffusion
from modules import sd_hijack, sd_models, sd_models_xl
from sgm.modules.diffusionmodules.wrappers import OpenAIWrapper
from sgm.modules.encoders.modules import (ConcatTimestepEmbedderND, FrozenCLIPEmbedder as SgmFrozenCLIPEmbedder,
                                          FrozenOpenCLIPEmbedder2, GeneralConditioner)


class DiffusionWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = "crossattn"


class FrozenCLIPEmbedder(nn.Module):
    """ldm's FrozenCLIPEmbedder (SD 1.x) as the hijack finds it: ``transformer`` and ``tokenizer``."""

    def __init__(self, transformer, tokenizer):
        super().__init__()
        self.transformer, self.tokenizer = transformer, tokenizer


class FirstStage(nn.Module):
    PROJECTION = torch.tensor([[0.8, -0.4, 0.3, 0.1], [-0.2, 0.9, 0.2, -0.5], [0.3, 0.1, -0.7, 0.6]])

    def encode(self, x):
        if x.shape[1] != 3:
            return x
        pooled = torch.nn.functional.avg_pool2d(x, 8)
        return torch.einsum("bchw,cd->bdhw", pooled, self.PROJECTION.to(x))

    def decode(self, z):
        return z


class LatentDiffusion(nn.Module):
    def __init__(self, unet, cond_stage_model, alphas_cumprod, parameterization="eps"):
        super().__init__()
        self.model = DiffusionWrapper(unet)
        self.cond_stage_model = cond_stage_model
        self.first_stage_model = FirstStage()
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        for name, value in (("sqrt_alphas_cumprod", alphas_cumprod.sqrt()), ("sqrt_one_minus_alphas_cumprod", (1 - alphas_cumprod).sqrt()),
                            ("sqrt_recip_alphas_cumprod", (1 / alphas_cumprod).sqrt()),
                            ("sqrt_recipm1_alphas_cumprod", (1 / alphas_cumprod - 1).sqrt())):
            self.register_buffer(name, value)  # ldm's DDPM.register_schedule
        self.cond_stage_key, self.parameterization = "txt", parameterization
        self.is_sdxl, self.is_ssd, self.is_sd3, self.is_sdxl_inpaint = False, False, False, False
        self.is_sd2 = hasattr(cond_stage_model, "model")  # set_model_type, before the hijack
        self.is_sd1 = not self.is_sd2
        self.lowvram = False
        sd_hijack.model_hijack.hijack(self)

    @property
    def device(self):
        return self.alphas_cumprod.device

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            cond = {"c_crossattn": [cond]}
        return self.model.diffusion_model(x_noisy, t, context=torch.cat(cond["c_crossattn"], 1))

    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, encoder_posterior):
        return 0.18215 * encoder_posterior

    def get_learned_conditioning(self, texts):
        return self.cond_stage_model(texts)


def sd1_model(rt, name="random-sd15", shorthash="b833ab4e10"):
    """From a runtime SD1 (its modules shared, not copied)."""
    model = LatentDiffusion(rt.unet, FrozenCLIPEmbedder(rt.text_model, rt.tokenizer), rt.alphas_cumprod)
    return sd_models.attach(model, sd_models.CheckpointInfo(name, shorthash, "v1-inference.yaml"))


def sd2_model(rt, name="tiny-sd2v", shorthash="5d2a7b1e3f"):
    """From a runtime SD2: ldm's real FrozenOpenCLIPEmbedder, v or eps as the runtime model."""
    model = LatentDiffusion(rt.unet, rt.cond_stage_model, rt.alphas_cumprod, rt.parameterization)
    config = "v2-inference-v.yaml" if rt.parameterization == "v" else "v2-inference.yaml"
    return sd_models.attach(model, sd_models.CheckpointInfo(name, shorthash, config))


def sdxl_model(rt, name="tiny-sdxl", shorthash="0f1d2c3b4a"):
    """From a runtime SDXL: its UNet, CLIP-L and bigG tower in sgm's conditioner."""
    clip_l = SgmFrozenCLIPEmbedder(rt.clip_l, rt.tokenizer, layer="hidden", layer_idx=11)
    bigg = FrozenOpenCLIPEmbedder2(rt.bigg.model, layer="penultimate", always_return_pooled=True, legacy=False)
    clip_l.input_key = bigg.input_key = "txt"
    sizes = [ConcatTimestepEmbedderND(256, key) for key in ("original_size_as_tuple", "crop_coords_top_left",
                                                            "target_size_as_tuple")]
    model = sgm.models.diffusion.DiffusionEngine(OpenAIWrapper(rt.unet), GeneralConditioner([clip_l, bigg, *sizes]),
                                                 FirstStage())
    sd_models_xl.extend_sdxl(model)
    model.is_sdxl, model.is_ssd, model.is_sd2, model.is_sd1, model.is_sd3 = True, False, False, False, False
    model.is_sdxl_inpaint, model.lowvram = False, False
    sd_hijack.model_hijack.hijack(model)
    return sd_models.attach(model, sd_models.CheckpointInfo(name, shorthash, "sd_xl_base.yaml"))
