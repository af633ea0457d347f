"""SDXL on real parts, outside any WebUI. sgm (SDXL's code base) is on no package registry, so
the UNet is ldm's ``UNetModel`` given SDXL's layout, and the conditioning is written here:

- UNet: three levels of 320/640/1280 channels, attention at the two lower ones with 2 and 10
  transformer blocks per ``SpatialTransformer`` (``transformer_depth [1, 2, 10]``; level 0 has
  none), 10 in the middle block, 64-channel heads, linear projections, context 2048, and
  ``label_emb`` (Linear-SiLU-Linear) adding the 2816-wide ``vector`` to the timestep embedding.
  Module names and classes are sgm's: ``input_blocks.7.1.transformer_blocks.9.attn2`` is a
  ``CrossAttention``; 70 cross-attention layers, 60 at latent/4.
- Text: CLIP ViT-L (transformers) gives its 11th block's output (``hidden_states[11]``, no final
  norm); OpenCLIP ViT-bigG (open_clip) gives the input of its last block (no final norm) and a
  pooled vector, the last block's ``ln_final`` output at the first end token times
  ``text_projection``. Per 77-token chunk both are concatenated on the channel axis into
  ``crossattn`` [1, 77k, 2048]; ``vector`` [1, 2816] is the first chunk's pooled vector followed
  by sinusoidal embeddings (256 each) of the original size (h, w), the crop corner (0, 0) and the
  target size (h, w). An empty negative prompt is all zeros in ``crossattn`` and the pooled part.
"""

import torch
from torch import nn

from ..families.clip import clip_self_attention
from ..families.open_clip import open_clip_self_attention, pad_after_end
from . import openclip
from .model import Diffusion, PromptChunk, head_channels, load_parts, load_weights, randomise, vae_decoder
from .sd1 import clip_text_model, peaky_clip
from .sd2 import PAD, peaky_open_clip

ARCH = "ViT-bigG-14"
CLIP_L_LAYER = 11          # hidden_states index SDXL's CLIP-L conditioning comes from
SIZE_CHANNELS = 256        # per number of each size condition
TRANSFORMER_DEPTH = (1, 2, 10)
MIDDLE_DEPTH = 10
UNET_CONFIG = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2],
                   num_res_blocks=2, channel_mult=[1, 2, 4], num_head_channels=64, use_spatial_transformer=True,
                   use_linear_in_transformer=True, transformer_depth=1, context_dim=2048, use_checkpoint=False,
                   legacy=False)


def _deep_transformer_class():
    from ldm.modules.attention import SpatialTransformer as LdmSpatialTransformer

    class SpatialTransformer(LdmSpatialTransformer):
        """ldm's ``SpatialTransformer`` whose blocks all attend to the one context (ldm's takes a
        list with a context, and a context width, per block; sgm's one for all)."""

        def forward(self, x, context=None):
            return super().forward(x, context=[context] * len(self.transformer_blocks))

    return SpatialTransformer


def sdxl_unet(model_channels: int = 320, context_dim: int = 2048, adm_in_channels: int = 2816) -> nn.Module:
    """ldm's ``UNetModel`` with SDXL's per-level transformer depth and ``label_emb``; called as
    ``unet(x, t, context=crossattn, y=vector)``."""
    from ldm.modules.attention import SpatialTransformer as LdmSpatialTransformer
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = dict(UNET_CONFIG, model_channels=model_channels, context_dim=context_dim,
                  num_head_channels=head_channels(model_channels))
    unet = UNetModel(**config)
    deep = _deep_transformer_class()
    for block in (*unet.input_blocks, unet.middle_block, *unet.output_blocks):
        for i, st in enumerate(block):
            if isinstance(st, LdmSpatialTransformer):
                ch = st.in_channels
                depth = MIDDLE_DEPTH if block is unet.middle_block else TRANSFORMER_DEPTH[config["channel_mult"].index(ch // model_channels)]
                heads = ch // config["num_head_channels"]
                block[i] = deep(ch, heads, config["num_head_channels"], depth=depth, context_dim=[context_dim] * depth,
                                use_linear=True, use_checkpoint=False)
    width = unet.time_embed[0].out_features
    unet.num_classes = "sequential"  # ldm's forward adds label_emb(y) to the timestep embedding
    unet.label_emb = nn.Sequential(nn.Sequential(nn.Linear(adm_in_channels, width), nn.SiLU(), nn.Linear(width, width)))
    return unet


class BigG(nn.Module):
    """SDXL's OpenCLIP ViT-bigG text encoder: the penultimate block's input and the pooled vector
    (``model`` is open_clip's CLIP without ``visual``, as in checkpoints: ``conditioner.embedders.1.model.*``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        del model.visual
        self.model = model

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` [k, 77] (0 after the first end token) -> (penultimate [k, 77, W], pooled [k, E])."""
        m = self.model
        x = (m.token_embedding(ids) + m.positional_embedding).transpose(0, 1)  # [77, k, W]: sequence-first
        blocks = m.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x, attn_mask=m.attn_mask)
        penultimate = x
        last = m.ln_final(blocks[-1](x, attn_mask=m.attn_mask).transpose(0, 1))
        pooled = last[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)] @ m.text_projection
        return penultimate.transpose(0, 1), pooled


def size_embedding(numbers: tuple[float, ...], device, dtype) -> torch.Tensor:
    """[len(numbers) * 256]: each number's sinusoidal embedding (cos half, then sin half), concatenated."""
    from ldm.modules.diffusionmodules.util import timestep_embedding

    return timestep_embedding(torch.tensor(numbers, device=device, dtype=torch.float32), SIZE_CHANNELS).reshape(-1).to(dtype)


class SDXL(Diffusion):
    """SDXL base: ``cond`` = {"crossattn": [B, 77k, 2048], "vector": [B, 2816]}."""

    family, text_encoders = "sdxl", ("clip-l", "bigg")
    scale_factor = 0.13025

    def __init__(self, unet: nn.Module, clip_l: nn.Module, bigg: BigG, decoder: nn.Module | None,
                 post_quant_conv: nn.Module | None):
        super().__init__()
        self.unet, self.clip_l, self.bigg = unet, clip_l, bigg
        self.decoder, self.post_quant_conv = decoder, post_quant_conv

    def ids(self, chunks: list[PromptChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """[k, 77] ids for CLIP-L (end-token padding) and for bigG (0 after the first end token)."""
        ids = torch.tensor([c.ids for c in chunks], device=self.device)
        return ids, pad_after_end(ids, self.tokenizer.eos_token_id, PAD)

    @torch.no_grad()
    def conditioning(self, chunks: list[PromptChunk], size: tuple[int, int], negative: bool = False) -> dict:
        """One prompt's conds at image ``size`` (h, w); ``negative`` with no token zeroes the text parts."""
        ids_l, ids_g = self.ids(chunks)
        hidden_l = self.clip_l(input_ids=ids_l, output_hidden_states=True).hidden_states[CLIP_L_LAYER]
        hidden_g, pooled = self.bigg(ids_g)
        crossattn = torch.cat([hidden_l, hidden_g], dim=-1).reshape(1, -1, hidden_l.shape[-1] + hidden_g.shape[-1])
        pooled = pooled[:1]  # the first chunk's, as A1111 takes it
        if negative and all(c.n == 0 for c in chunks):
            crossattn, pooled = torch.zeros_like(crossattn), torch.zeros_like(pooled)
        h, w = size
        sizes = size_embedding((h, w, 0, 0, h, w), self.device, pooled.dtype)[None]
        return {"crossattn": crossattn.to(self.dtype), "vector": torch.cat([pooled, sizes], dim=-1).to(self.dtype)}

    def self_attention(self, chunks: list[PromptChunk]) -> dict[str, torch.Tensor]:
        ids_l, ids_g = self.ids(chunks)
        return {"clip-l": clip_self_attention(self.clip_l, ids_l), "bigg": open_clip_self_attention(self.bigg.model, ids_g)}

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """eps prediction [B, 4, h, w] for z ``x``, timesteps ``t`` [B] and ``cond`` (crossattn, vector)."""
        return self.unet(x, t, context=cond["crossattn"], y=cond["vector"])

    def make_peaky(self) -> None:
        peaky_clip(self.clip_l)
        peaky_open_clip(self.bigg.model)
        super().make_peaky()


def build(model_channels: int = 320, decoder: bool = True, seed: int = 0, peaky: bool = True,
          text_head_dim: int | None = None) -> SDXL:
    """SDXL base's modules with deterministic random weights (real size: ~3.5e9 parameters, 14 GB
    in fp32). ``model_channels`` < 320 and ``text_head_dim`` < 64 shrink the UNet and both text
    towers (same layers and heads)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip_l = clip_text_model(text_head_dim)
        bigg = BigG(openclip.text_clip(ARCH, text_head_dim))
        pooled = bigg.model.text_projection.shape[1]
        context = clip_l.config.hidden_size + bigg.model.transformer.width
        unet = sdxl_unet(model_channels, context, pooled + 6 * SIZE_CHANNELS)
        dec, post = vae_decoder() if decoder else (None, None)
        return randomise(SDXL(unet, clip_l, bigg, dec, post), peaky)


def load_checkpoint(path: str, model_channels: int = 320, text_head_dim: int | None = None) -> SDXL:
    """An SDXL base checkpoint in A1111's layout (``model.diffusion_model.*``,
    ``conditioner.embedders.0.transformer.*``, ``conditioner.embedders.1.model.*``, ``first_stage_model.*``)."""
    state = load_weights(path)
    model = build(model_channels=model_channels, peaky=False, text_head_dim=text_head_dim)
    load_parts(state, {"model.diffusion_model.": model.unet, "conditioner.embedders.0.transformer.": model.clip_l,
                       "conditioner.embedders.1.model.": model.bigg.model,
                       "first_stage_model.decoder.": model.decoder,
                       "first_stage_model.post_quant_conv.": model.post_quant_conv}, "SDXL", path)
    return model
