"""What the WebUI's ``shared.sd_model`` is for an SD1.x checkpoint, as far as the adapter sees it:
ldm's ``LatentDiffusion`` (``model.diffusion_model`` = the real ldm UNet, ``apply_model``,
``alphas_cumprod``) after ``sd_hijack.model_hijack.hijack`` (``cond_stage_model`` =
``FrozenCLIPEmbedderWithCustomWords`` over a real ``CLIPTextModel`` whose token embedding is
``EmbeddingsWithFixes``), plus the flags sd_models.py sets."""

import torch
from torch import nn

from modules import sd_hijack, sd_hijack_clip


class DiffusionWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = "crossattn"


class FrozenCLIPEmbedder(nn.Module):
    def __init__(self, transformer, tokenizer):
        super().__init__()
        self.transformer, self.tokenizer = transformer, tokenizer


class LatentDiffusion(nn.Module):
    def __init__(self, unet, text_model, tokenizer, alphas_cumprod):
        super().__init__()
        self.model = DiffusionWrapper(unet)
        embeddings = text_model.text_model.embeddings
        embeddings.token_embedding = sd_hijack.EmbeddingsWithFixes(embeddings.token_embedding, sd_hijack.model_hijack)
        self.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedder(text_model, tokenizer),
                                                                                 sd_hijack.model_hijack)
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        self.cond_stage_key, self.parameterization = "txt", "eps"
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = True, False, False, False
        self.lowvram = False
        self.sd_model_hash = "b833ab4e10"

    @property
    def device(self):
        return self.alphas_cumprod.device

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            cond = {"c_crossattn": [cond]}
        return self.model.diffusion_model(x_noisy, t, context=torch.cat(cond["c_crossattn"], 1))

    def get_learned_conditioning(self, texts):
        return self.cond_stage_model(texts)
