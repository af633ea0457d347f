"""Stable Diffusion 2.x on its real architectures, outside any WebUI: ldm's ``UNetModel`` with
SD 2's configuration (64-channel heads, linear projections in the transformers, 1024-wide
context), ldm's ``FrozenOpenCLIPEmbedder`` over open_clip's ViT-H-14 text tower (the penultimate
block's output after ``ln_final``, as ``v2-inference.yaml`` asks), the VAE decoder. The 512-base
model predicts eps; the 768-v one predicts v (``parameterization = "v"``).
"""

import contextlib

import torch
from torch import nn

from ..families.open_clip import open_clip_self_attention, pad_after_end
from . import openclip
from .model import Diffusion, PromptChunk, head_channels, load_parts, load_weights, peaky_text, randomise, vae_decoder

# v2-inference(-v).yaml's unet_config; ``model_channels`` may be made smaller for tests.
UNET_CONFIG = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                   num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
                   use_linear_in_transformer=True, transformer_depth=1, context_dim=1024, use_checkpoint=False,
                   legacy=False)
ARCH = "ViT-H-14"
PAD = 0  # what A1111 writes after the first end token for open_clip


@contextlib.contextmanager
def replaced(obj, name: str, value):
    """``obj.name`` is ``value`` inside the scope, then what it was (or absent) again."""
    missing = object()
    saved = getattr(obj, name, missing)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if saved is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, saved)


def peaky_open_clip(model: nn.Module) -> None:
    """``peaky_text`` for an open_clip text tower (packed q/k/v input projection)."""
    def blocks():
        for r in model.transformer.resblocks:
            e = r.attn.embed_dim
            yield r.attn.in_proj_weight[:e], r.attn.in_proj_weight[e:2 * e], r.attn.out_proj.weight, r.mlp.c_proj.weight
    peaky_text(model.token_embedding.weight, blocks())


def open_clip_embedder(head_dim: int | None = None) -> nn.Module:
    """ldm's ``FrozenOpenCLIPEmbedder(layer="penultimate")`` over a random ViT-H-14 text tower:
    its own constructor runs, with open_clip's factory (which would download weights) answered
    by the tower built here."""
    oc = openclip.load()  # before ldm's encoders module imports it
    from ldm.modules.encoders.modules import FrozenOpenCLIPEmbedder

    tower = openclip.text_clip(ARCH, head_dim)
    with replaced(oc, "create_model_and_transforms", lambda *args, **kwargs: (tower, None, None)):
        return FrozenOpenCLIPEmbedder(arch=ARCH, version=None, device="cpu", layer="penultimate")


class SD2(Diffusion):
    """SD 2.x: ``cond`` [B, 77k, 1024] from OpenCLIP ViT-H; ``cond_stage_model`` is ldm's embedder
    (its ``model`` the open_clip tower, as in A1111's checkpoints: ``cond_stage_model.model.*``)."""

    family, text_encoders = "sd2", ("openclip-h",)

    def __init__(self, unet: nn.Module, cond_stage_model: nn.Module, decoder: nn.Module | None,
                 post_quant_conv: nn.Module | None, v_prediction: bool = False):
        super().__init__()
        self.unet, self.cond_stage_model = unet, cond_stage_model
        self.decoder, self.post_quant_conv = decoder, post_quant_conv
        self.parameterization = "v" if v_prediction else "eps"

    def tower_ids(self, chunks: list[PromptChunk]) -> torch.Tensor:
        """[k, 77] ids as open_clip gets them: 0 after the first end token."""
        ids = torch.tensor([c.ids for c in chunks], device=self.device)
        return pad_after_end(ids, self.tokenizer.eos_token_id, PAD)

    @torch.no_grad()
    def conditioning(self, chunks: list[PromptChunk], size: tuple[int, int], negative: bool = False) -> torch.Tensor:
        z = self.cond_stage_model.encode_with_transformer(self.tower_ids(chunks))
        return z.reshape(1, -1, z.shape[-1]).to(self.dtype)

    def self_attention(self, chunks: list[PromptChunk]) -> dict[str, torch.Tensor]:
        return {"openclip-h": open_clip_self_attention(self.cond_stage_model.model, self.tower_ids(chunks))}

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps or v prediction [B, 4, h, w] for z ``x``, timesteps ``t`` [B], text ``cond`` [B, 77k, 1024]."""
        return self.unet(x, t, context=cond)

    def make_peaky(self) -> None:
        peaky_open_clip(self.cond_stage_model.model)
        super().make_peaky()


def sd2_unet(model_channels: int = 320, context_dim: int = 1024) -> nn.Module:
    """ldm's ``UNetModel`` in SD 2.x's configuration."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**dict(UNET_CONFIG, model_channels=model_channels, context_dim=context_dim,
                            num_head_channels=head_channels(model_channels)))


def build(model_channels: int = 320, decoder: bool = True, seed: int = 0, peaky: bool = True,
          v_prediction: bool = False, text_head_dim: int | None = None) -> SD2:
    """SD 2.x's modules with deterministic random weights; ``model_channels`` < 320 and
    ``text_head_dim`` < 64 shrink the UNet and the text tower (same layers and heads)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = open_clip_embedder(text_head_dim)
        unet = sd2_unet(model_channels, text.model.transformer.width)
        dec, post = vae_decoder() if decoder else (None, None)
        return randomise(SD2(unet, text, dec, post, v_prediction), peaky)


def load_checkpoint(path: str, v_prediction: bool, model_channels: int = 320, text_head_dim: int | None = None) -> SD2:
    """An SD 2.x checkpoint in A1111's layout (``model.diffusion_model.*``,
    ``cond_stage_model.model.*``, ``first_stage_model.*``)."""
    state = load_weights(path)
    model = build(model_channels=model_channels, peaky=False, v_prediction=v_prediction, text_head_dim=text_head_dim)
    load_parts(state, {"model.diffusion_model.": model.unet, "cond_stage_model.model.": model.cond_stage_model.model,
                       "first_stage_model.decoder.": model.decoder,
                       "first_stage_model.post_quant_conv.": model.post_quant_conv}, "SD 2.x", path)
    return model
