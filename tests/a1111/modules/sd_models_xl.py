"""Mirrors modules/sd_models_xl.py: ``get_learned_conditioning`` (the conditioner gets the texts
and the size / crop / target tensors of the batch; an all-empty negative prompt gets
``force_zero_embeddings=["txt"]``), ``apply_model`` (``c_concat`` only for SDXL inpainting),
``extend_sdxl`` (eps or v from the denoiser's scaling, SD 1.x's DDPM ``alphas_cumprod``), and
the ``GeneralConditioner`` additions that let A1111 use it as ``cond_stage_model``; all patched
onto the sgm stand-in's classes as upstream patches sgm's."""

import torch

import sgm.models.diffusion
import sgm.modules
from modules import devices, shared


def get_learned_conditioning(self, batch):
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0
    width = getattr(batch, "width", 1024) or 1024
    height = getattr(batch, "height", 1024) or 1024
    is_negative_prompt = getattr(batch, "is_negative_prompt", False)
    aesthetic_score = (shared.opts.sdxl_refiner_low_aesthetic_score if is_negative_prompt
                       else shared.opts.sdxl_refiner_high_aesthetic_score)
    args = dict(device=devices.device, dtype=devices.dtype)
    sdxl_conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
        "crop_coords_top_left": torch.tensor([shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left], **args).repeat(len(batch), 1),
        "target_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
        "aesthetic_score": torch.tensor([aesthetic_score], **args).repeat(len(batch), 1),
    }
    force_zero_negative_prompt = is_negative_prompt and all(x == "" for x in batch)
    return self.conditioner(sdxl_conds, force_zero_embeddings=["txt"] if force_zero_negative_prompt else [])


def apply_model(self, x, t, cond):
    if self.is_sdxl_inpaint:
        x = torch.cat([x] + cond["c_concat"], dim=1)
    return self.model(x, t, cond)


sgm.models.diffusion.DiffusionEngine.get_learned_conditioning = get_learned_conditioning
sgm.models.diffusion.DiffusionEngine.apply_model = apply_model


def tokenize(self, texts):
    for embedder in [e for e in self.embedders if hasattr(e, "tokenize")]:
        return embedder.tokenize(texts)
    raise AssertionError("no tokenizer available")


def process_texts(self, texts):
    for embedder in [e for e in self.embedders if hasattr(e, "process_texts")]:
        return embedder.process_texts(texts)


def get_target_prompt_token_count(self, token_count):
    for embedder in [e for e in self.embedders if hasattr(e, "get_target_prompt_token_count")]:
        return embedder.get_target_prompt_token_count(token_count)


sgm.modules.GeneralConditioner.tokenize = tokenize
sgm.modules.GeneralConditioner.process_texts = process_texts
sgm.modules.GeneralConditioner.get_target_prompt_token_count = get_target_prompt_token_count


def extend_sdxl(model):
    model.model.conditioning_key = "crossattn"
    model.cond_stage_key = "txt"
    model.parameterization = "v" if isinstance(model.denoiser.scaling, sgm.models.diffusion.VScaling) else "eps"
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # LegacyDDPMDiscretization
    model.alphas_cumprod = torch.asarray(torch.cumprod(1.0 - betas, dim=0), device=devices.device, dtype=torch.float32)
    model.conditioner.wrapped = torch.nn.Module()
