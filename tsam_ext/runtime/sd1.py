"""Stable Diffusion 1.x on its real architectures, outside any WebUI: ldm's ``UNetModel`` and
VAE ``Decoder``, transformers' ``CLIPTextModel`` and the real CLIP tokenizer, with random
weights (default) or the weights of an SD1.x checkpoint.

Random weights give near-uniform attention (every token's map alike) and so a vanishing T-SAM
gradient; ``peakify`` rescales the attention projections, as real weights are peaky, so that
the mechanics (and any test of them) mean something. The pictures stay noise.
"""

import contextlib
import io
import os
from dataclasses import dataclass

import torch
from torch import nn

from .clip_vocab import clip_tokenizer

CHUNK_TOKENS = 75
SCALE_FACTOR = 0.18215  # SD1.x latent scaling (v1-inference.yaml)

# v1-inference.yaml's unet_config; ``model_channels`` may be made smaller for tests.
UNET_CONFIG = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                   num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                   transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False)
VAE_DECODER_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                          ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   attention_dropout=0.0, dropout=0.0, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def alphas_cumprod() -> torch.Tensor:
    """SD1.x's DDPM schedule: 'scaled linear' betas from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@dataclass(frozen=True)
class PromptChunk:
    """One 77-token chunk: ``ids`` = <bos> + up to 75 prompt tokens + <eos> padding; ``n`` prompt tokens."""
    ids: tuple[int, ...]
    n: int


def prompt_chunks(tokenizer, prompt: str) -> list[PromptChunk]:
    """Split a prompt into 75-token chunks as A1111 does (no emphasis, BREAK or comma backtrack)."""
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    bodies = [ids[i:i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)] or [[]]
    return [PromptChunk(tuple([bos] + b + [eos] * (CHUNK_TOKENS + 1 - len(b))), len(b)) for b in bodies]


class SD1(nn.Module):
    """The parts T-SAM touches, with k-diffusion's CompVis interface (``alphas_cumprod``, ``apply_model``)."""

    def __init__(self, unet: nn.Module, text_model: nn.Module, decoder: nn.Module | None, post_quant_conv: nn.Module | None):
        super().__init__()
        self.unet, self.text_model = unet, text_model
        self.decoder, self.post_quant_conv = decoder, post_quant_conv
        self.tokenizer = clip_tokenizer()
        self.register_buffer("alphas_cumprod", alphas_cumprod(), persistent=False)

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps prediction [B, 4, h, w] for z ``x``, DDPM timesteps ``t`` [B] and text ``cond`` [B, 77k, 768]."""
        return self.unet(x, t, context=cond)

    @torch.no_grad()
    def encode(self, chunks: list[PromptChunk]) -> torch.Tensor:
        """Text conditioning [1, 77 * len(chunks), 768]: the chunks' last hidden states, concatenated."""
        ids = torch.tensor([c.ids for c in chunks], device=self.device)
        hidden = self.text_model(input_ids=ids).last_hidden_state
        return hidden.reshape(1, -1, hidden.shape[-1]).to(self.dtype)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 8h, 8w] in 0..1 from latents [B, 4, h, w]."""
        z = self.post_quant_conv(latent.to(self.dtype) / SCALE_FACTOR)
        return ((self.decoder(z).float() + 1) / 2).clamp(0, 1)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def build(model_channels: int = 320, decoder: bool = True, seed: int = 0, peaky: bool = True) -> SD1:
    """SD1.x's modules with deterministic random weights (``model_channels`` < 320 for fast tests)."""
    from ldm.modules.diffusionmodules.model import Decoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModel(**dict(UNET_CONFIG, model_channels=model_channels))
        text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        dec = post = None
        if decoder:
            with contextlib.redirect_stdout(io.StringIO()):  # ldm's Decoder prints its z shape
                dec = Decoder(**VAE_DECODER_CONFIG)
            post = nn.Conv2d(4, 4, 1)
        model = SD1(unet, text, dec, post).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1 and not p.any():  # ldm zero-initialises output layers: make every block live
                    p.copy_(torch.randn_like(p) * 1e-3)
            for m in model.modules():  # zero norm biases make each output token's mean exactly 0, unlike trained
                if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.bias is not None:  # weights (and the WebUI's
                    m.bias.copy_(torch.randn_like(m.bias) * 0.02)                        # emphasis divides by it)
            if peaky:
                make_peaky(model)
    return model


@torch.no_grad()
def make_peaky(model: SD1, clip_qk: float = 8.0, unet_qk: float = 4.0) -> SD1:
    """Trained-like, peaky attention on random weights (the recipe of the shared random checkpoint).

    CLIP: token embeddings spread to N(0, 1), q/k scaled by ``clip_qk``, residual branches
    halved, so self-attention depends on the tokens. UNet ``attn2``: every head shares head 0's
    q/k rows (independent random heads would average to flat maps) scaled by ``unet_qk``.
    """
    tm = model.text_model.text_model
    emb = tm.embeddings.token_embedding.weight
    emb.copy_(torch.randn_like(emb))
    for layer in tm.encoder.layers:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            lin.weight.mul_(clip_qk)
        layer.self_attn.out_proj.weight.mul_(0.5)
        layer.mlp.fc2.weight.mul_(0.5)
    for name, m in model.unet.named_modules():
        if name.endswith("attn2"):
            for lin in (m.to_q, m.to_k):
                w = lin.weight.view(m.heads, -1, lin.weight.shape[1])
                w.copy_(w[:1].expand_as(w) * unet_qk)
    return model


def load_checkpoint(path: str, model_channels: int = 320) -> SD1:
    """An SD1.x ``.safetensors`` / ``.ckpt`` (A1111's layout: ``model.diffusion_model.*``,
    ``cond_stage_model.transformer.*``, ``first_stage_model.*``) on the real architectures."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    model = build(model_channels=model_channels, peaky=False)
    parts = {"model.diffusion_model.": model.unet, "cond_stage_model.transformer.": model.text_model,
             "first_stage_model.decoder.": model.decoder, "first_stage_model.post_quant_conv.": model.post_quant_conv}
    for prefix, module in parts.items():
        sub = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise ValueError(f"{os.path.basename(path)} has no '{prefix}*' weights: not an SD1.x checkpoint")
        missing, unexpected = module.load_state_dict(sub, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"{os.path.basename(path)} does not fit SD1.x at '{prefix}': "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def _sdpa_forward(self, x, context=None, mask=None, **kwargs):
    """ldm ``CrossAttention.forward`` through torch's fused attention, as A1111's default "sdp"
    optimisation does: same maths, no materialised attention matrix."""
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, h = q.shape[0], q.shape[1], self.heads
    q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def use_sdpa(model: SD1) -> SD1:
    """Give every attention layer of the UNet the fused-attention forward (per instance)."""
    import types

    from ldm.modules.attention import CrossAttention

    for m in model.unet.modules():
        if isinstance(m, CrossAttention):
            m.forward = types.MethodType(_sdpa_forward, m)
    return model
