"""What every Stable Diffusion family of the runtime shares: the A1111-style prompt chunks, the
DDPM schedule, the VAE decoder, k-diffusion's CompVis interface (``alphas_cumprod``,
``apply_model``, ``parameterization``), random weights that are trained-like enough for T-SAM
to mean something, and loading a checkpoint's weights by key prefix.

A family (``sd1``, ``sd2``, ``sdxl``) subclasses ``Diffusion`` with its text encoders: how a
prompt's chunks become the UNet's conditioning, and the self-attention of each text encoder.
"""

import contextlib
import io
import os
import types
from dataclasses import dataclass

import torch
from torch import nn

from ..core.zspace import sd_alphas_cumprod
from .clip_vocab import clip_tokenizer

CHUNK_TOKENS = 75
VAE_DECODER_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                          ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)


@dataclass(frozen=True)
class PromptChunk:
    """One 77-token chunk: ``ids`` = <bos> + up to 75 prompt tokens + <eos> padding; ``n`` prompt tokens."""
    ids: tuple[int, ...]
    n: int


def prompt_chunks(tokenizer, prompt: str) -> list[PromptChunk]:
    """Split a prompt into 75-token chunks as A1111 does (no emphasis, BREAK or comma backtrack).
    Every family's encoders share this BPE; an open_clip encoder re-pads with 0 itself."""
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    bodies = [ids[i:i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)] or [[]]
    return [PromptChunk(tuple([bos] + b + [eos] * (CHUNK_TOKENS + 1 - len(b))), len(b)) for b in bodies]


def head_channels(model_channels: int, real: int = 64, real_width: int = 320) -> int:
    """Channels per attention head for a UNet of ``model_channels``: ``real`` at the real width;
    a narrower UNet keeps about the real number of heads (the channels scaled down, rounded down to
    a divisor of the width, since every level's width is a multiple of it)."""
    target = max(1, real * model_channels // real_width)
    return max(d for d in range(1, target + 1) if model_channels % d == 0)


def vae_decoder() -> tuple[nn.Module, nn.Module]:
    """ldm's VAE ``Decoder`` and ``post_quant_conv`` (the same architecture in SD 1.x, 2.x and SDXL)."""
    from ldm.modules.diffusionmodules.model import Decoder

    with contextlib.redirect_stdout(io.StringIO()):  # ldm's Decoder prints its z shape
        decoder = Decoder(**VAE_DECODER_CONFIG)
    return decoder, nn.Conv2d(4, 4, 1)


class Diffusion(nn.Module):
    """The parts of a checkpoint T-SAM touches. Subclasses set the class attributes, register
    ``unet``, their text encoders, ``decoder`` and ``post_quant_conv`` (None without a decoder),
    and give ``conditioning``, ``self_attention`` and ``apply_model``; ``text_encoders`` names the
    encoders ``self_attention`` returns."""

    family = ""
    parameterization = "eps"   # "v" for v-prediction (k-diffusion's CompVisVDenoiser)
    scale_factor = 0.18215     # latent scaling of the VAE
    text_encoders: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.tokenizer = clip_tokenizer()
        self.register_buffer("alphas_cumprod", sd_alphas_cumprod().float(), persistent=False)

    def chunks(self, prompt: str) -> list[PromptChunk]:
        return prompt_chunks(self.tokenizer, prompt)

    def conditioning(self, chunks: list[PromptChunk], size: tuple[int, int], negative: bool = False):
        """The UNet's conditioning of one prompt (batch of 1) at image ``size`` (h, w) in px."""
        raise NotImplementedError

    def self_attention(self, chunks: list[PromptChunk]) -> dict[str, torch.Tensor]:
        """Each text encoder's self-attention probabilities [len(chunks), L, H, 77, 77], float32."""
        raise NotImplementedError

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """The UNet's prediction [B, 4, h, w] for z ``x``, DDPM timesteps ``t`` [B] and ``cond``."""
        raise NotImplementedError

    def make_peaky(self) -> None:
        """Trained-like, peaky attention on random weights (see ``peaky_unet`` and the text towers')."""
        peaky_unet(self.unet)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 8h, 8w] in 0..1 from latents [B, 4, h, w]."""
        z = self.post_quant_conv(latent.to(self.dtype) / self.scale_factor)
        return ((self.decoder(z).float() + 1) / 2).clamp(0, 1)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


@torch.no_grad()
def randomise(model: Diffusion, peaky: bool = True) -> Diffusion:
    """Random weights a gradient can flow through: ldm zero-initialises output layers (filled with
    small noise so every block is live) and norm biases (zero biases make each output token's
    mean exactly 0, unlike trained weights, and the WebUI's emphasis divides by it)."""
    for p in model.parameters():
        if p.dim() > 1 and not p.any():
            p.copy_(torch.randn_like(p) * 1e-3)
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.bias is not None:
            m.bias.copy_(torch.randn_like(m.bias) * 0.02)
    if peaky:
        model.make_peaky()
    return model.eval()


@torch.no_grad()
def peaky_unet(unet: nn.Module, qk: float = 4.0) -> None:
    """Every ``attn2`` head shares head 0's q/k rows, scaled by ``qk``: independent random heads
    would average into flat maps."""
    for name, m in unet.named_modules():
        if name.endswith("attn2"):
            for lin in (m.to_q, m.to_k):
                w = lin.weight.view(m.heads, -1, lin.weight.shape[1])
                w.copy_(w[:1].expand_as(w) * qk)


@torch.no_grad()
def peaky_text(token_embedding: torch.Tensor, blocks, qk: float = 8.0) -> None:
    """A text tower whose self-attention depends on the tokens: token embeddings spread to N(0, 1),
    q and k scaled by ``qk``, residual branches halved. ``blocks`` yields (q weight, k weight,
    attention output weight, MLP output weight) per layer."""
    token_embedding.copy_(torch.randn_like(token_embedding))
    for q, k, out, mlp_out in blocks:
        q.mul_(qk)
        k.mul_(qk)
        out.mul_(0.5)
        mlp_out.mul_(0.5)


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` / ``.ckpt`` state dict (A1111's key layout)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def load_parts(state: dict[str, torch.Tensor], parts: dict[str, nn.Module], family: str, path: str) -> None:
    """Copy ``state``'s ``<prefix>*`` weights into each module of ``parts``, strictly but for buffers
    that checkpoints leave out; a checkpoint of another family or size fails with a message."""
    name = os.path.basename(path)
    subs = {prefix: {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)} for prefix in parts}
    for prefix, sub in subs.items():
        if not sub:
            raise ValueError(f"{name} has no '{prefix}*' weights: not an {family} checkpoint")
    for prefix, module in parts.items():
        try:
            missing, unexpected = module.load_state_dict(subs[prefix], strict=False)
        except RuntimeError as e:  # shapes: another size or family
            raise ValueError(f"{name} does not fit {family} at '{prefix}': {str(e).splitlines()[1].strip()}") from None
        missing = [k for k in missing if not k.endswith(("position_ids", "attn_mask"))]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"{name} does not fit {family} at '{prefix}': missing {missing[:3]}, unexpected {unexpected[:3]}")


def _sdpa_forward(self, x, context=None, mask=None, **kwargs):
    """ldm ``CrossAttention.forward`` through torch's fused attention, as A1111's default "sdp"
    optimisation does: same maths, no materialised attention matrix."""
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, h = q.shape[0], q.shape[1], self.heads
    q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def sdpa_unet(unet: nn.Module) -> nn.Module:
    """Give every attention layer of ``unet`` the fused-attention forward (per instance)."""
    from ldm.modules.attention import CrossAttention

    for m in unet.modules():
        if isinstance(m, CrossAttention):
            m.forward = types.MethodType(_sdpa_forward, m)
    return unet


def use_sdpa(model: Diffusion) -> Diffusion:
    """``sdpa_unet`` on the model's UNet."""
    sdpa_unet(model.unet)
    return model
