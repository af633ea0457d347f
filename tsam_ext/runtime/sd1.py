"""Stable Diffusion 1.x on its real architectures, outside any WebUI: ldm's ``UNetModel`` and
VAE ``Decoder``, transformers' ``CLIPTextModel`` and the real CLIP tokenizer, with random
weights (default) or the weights of an SD1.x checkpoint.

Random weights give near-uniform attention (every token's map alike) and so a vanishing T-SAM
gradient; ``make_peaky`` rescales the attention projections, as real weights are peaky, so that
the mechanics (and any test of them) mean something. The pictures stay noise.
"""

import torch
from torch import nn

from ..families.clip import clip_self_attention
from .model import (Diffusion, PromptChunk, load_parts, load_weights, peaky_text, prompt_chunks, randomise, use_sdpa,
                    vae_decoder)

__all__ = ["SD1", "PromptChunk", "build", "load_checkpoint", "prompt_chunks", "use_sdpa"]

# v1-inference.yaml's unet_config; ``model_channels`` may be made smaller for tests.
UNET_CONFIG = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                   num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                   transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False)
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   attention_dropout=0.0, dropout=0.0, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def clip_text_model(head_dim: int | None = None) -> nn.Module:
    """transformers' ``CLIPTextModel`` of CLIP ViT-L with random weights; ``head_dim`` < 64 narrows
    every head, keeping the 12 layers of 12 heads."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = dict(TEXT_CONFIG)
    if head_dim is not None:
        heads = config["num_attention_heads"]
        config.update(hidden_size=heads * head_dim, intermediate_size=4 * heads * head_dim)
    # eager: the attention implementation that returns probabilities (transformers 5 defaults to SDPA,
    # which gives none for output_attentions=True); transformers 4.30 keeps it as a plain attribute
    return CLIPTextModel(CLIPTextConfig(**config, attn_implementation="eager"))


def peaky_clip(text_model: nn.Module) -> None:
    """``peaky_text`` for a transformers ``CLIPTextModel``."""
    tm = text_model.text_model
    peaky_text(tm.embeddings.token_embedding.weight,
               ((l.self_attn.q_proj.weight, l.self_attn.k_proj.weight, l.self_attn.out_proj.weight, l.mlp.fc2.weight)
                for l in tm.encoder.layers))


class SD1(Diffusion):
    """SD 1.x: CLIP ViT-L's last hidden state conditions the UNet (``cond`` [B, 77k, 768])."""

    family, text_encoders = "sd1", ("clip-l",)

    def __init__(self, unet: nn.Module, text_model: nn.Module, decoder: nn.Module | None, post_quant_conv: nn.Module | None):
        super().__init__()
        self.unet, self.text_model = unet, text_model
        self.decoder, self.post_quant_conv = decoder, post_quant_conv

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps prediction [B, 4, h, w] for z ``x``, DDPM timesteps ``t`` [B] and text ``cond`` [B, 77k, 768]."""
        return self.unet(x, t, context=cond)

    @torch.no_grad()
    def encode(self, chunks: list[PromptChunk]) -> torch.Tensor:
        """Text conditioning [1, 77 * len(chunks), 768]: the chunks' last hidden states, concatenated."""
        ids = torch.tensor([c.ids for c in chunks], device=self.device)
        hidden = self.text_model(input_ids=ids).last_hidden_state
        return hidden.reshape(1, -1, hidden.shape[-1]).to(self.dtype)

    def conditioning(self, chunks: list[PromptChunk], size: tuple[int, int], negative: bool = False) -> torch.Tensor:
        return self.encode(chunks)

    def self_attention(self, chunks: list[PromptChunk]) -> dict[str, torch.Tensor]:
        return {"clip-l": clip_self_attention(self.text_model, torch.tensor([c.ids for c in chunks], device=self.device))}

    def make_peaky(self) -> None:
        peaky_clip(self.text_model)
        super().make_peaky()


def sd1_unet(model_channels: int = 320, context_dim: int = 768) -> nn.Module:
    """ldm's ``UNetModel`` in SD 1.x's configuration."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**dict(UNET_CONFIG, model_channels=model_channels, context_dim=context_dim))


def build(model_channels: int = 320, decoder: bool = True, seed: int = 0, peaky: bool = True,
          text_head_dim: int | None = None) -> SD1:
    """SD1.x's modules with deterministic random weights; ``model_channels`` < 320 and
    ``text_head_dim`` < 64 shrink the UNet and CLIP (same layers and heads)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_width = TEXT_CONFIG["num_attention_heads"] * text_head_dim if text_head_dim else TEXT_CONFIG["hidden_size"]
        unet = sd1_unet(model_channels, text_width)
        text = clip_text_model(text_head_dim)
        dec, post = vae_decoder() if decoder else (None, None)
        return randomise(SD1(unet, text, dec, post), peaky)


def load_checkpoint(path: str, model_channels: int = 320, text_head_dim: int | None = None) -> SD1:
    """An SD1.x ``.safetensors`` / ``.ckpt`` (A1111's layout: ``model.diffusion_model.*``,
    ``cond_stage_model.transformer.*``, ``first_stage_model.*``) on the real architectures."""
    state = load_weights(path)
    model = build(model_channels=model_channels, peaky=False, text_head_dim=text_head_dim)
    load_parts(state, {"model.diffusion_model.": model.unet, "cond_stage_model.transformer.": model.text_model,
                       "first_stage_model.decoder.": model.decoder,
                       "first_stage_model.post_quant_conv.": model.post_quant_conv}, "SD1.x", path)
    return model
