"""Mirrors backend/loader.py ``forge_loader`` (:497), run under ``torch.inference_mode`` as there:
every module is built anew and every weight becomes a new ``nn.Parameter`` made in inference
mode (what ``ForgeOperations.*._load_from_state_dict`` do, backend/operations.py:137-144), so each
weight is an inference tensor. The checkpoint is a ``tsam_ext.runtime`` model (the real
architectures): SD1 -> ``sd15.StableDiffusion``, SD2 -> ``sd20.StableDiffusion2``, SDXL ->
``sdxl.StableDiffusionXL``; the UNet gets Forge's attention and transformer blocks
(backend/nn/unet.py). OpenCLIP text towers are loaded, as Forge loads them, into transformers'
``CLIPTextModel`` with the diffusers config of the family (``load_huggingface_component`` over
backend/huggingface/stabilityai/*/text_encoder*/config.json and huggingface_guess's open_clip to
transformers key conversion): SD 2.x's config has 23 layers, so its 24th block is not loaded;
SDXL's clip_g keeps all 32 and its ``text_projection``."""

import copy

import torch

from backend.diffusion_engine.sd15 import StableDiffusion
from backend.diffusion_engine.sd20 import StableDiffusion2
from backend.diffusion_engine.sdxl import StableDiffusionXL
from backend.nn.unet import integrate
from backend.operations import forge_layers

SD2_TEXT_LAYERS = 23  # stable-diffusion-2-1/text_encoder/config.json: num_hidden_layers


def _inference_weights(module: torch.nn.Module) -> None:
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(p.detach().clone())
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = b.detach().clone()


def transformers_clip(tower, layers: int | None = None):
    """open_clip's text ``CLIP`` -> transformers ``CLIPTextModel`` with the same weights (its first
    ``layers`` blocks), and its projection as a bias-free Linear (x @ text_projection)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    blocks = tower.transformer.resblocks
    layers = len(blocks) if layers is None else layers
    width = tower.transformer.width
    config = CLIPTextConfig(vocab_size=tower.token_embedding.num_embeddings, hidden_size=width,
                            intermediate_size=blocks[0].mlp.c_fc.out_features, num_hidden_layers=layers,
                            num_attention_heads=blocks[0].attn.num_heads, max_position_embeddings=77,
                            hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=tower.text_projection.shape[1])
    model = CLIPTextModel(config)
    model.config._attn_implementation = "eager"
    tm = model.text_model
    with torch.no_grad():
        tm.embeddings.token_embedding.weight.copy_(tower.token_embedding.weight)
        tm.embeddings.position_embedding.weight.copy_(tower.positional_embedding)
        for block, layer in zip(blocks, tm.encoder.layers):
            q, k, v = block.attn.in_proj_weight.chunk(3)
            qb, kb, vb = block.attn.in_proj_bias.chunk(3)
            for proj, w, b in ((layer.self_attn.q_proj, q, qb), (layer.self_attn.k_proj, k, kb), (layer.self_attn.v_proj, v, vb)):
                proj.weight.copy_(w)
                proj.bias.copy_(b)
            pairs = ((layer.self_attn.out_proj, block.attn.out_proj), (layer.layer_norm1, block.ln_1),
                     (layer.layer_norm2, block.ln_2), (layer.mlp.fc1, block.mlp.c_fc), (layer.mlp.fc2, block.mlp.c_proj))
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        tm.final_layer_norm.weight.copy_(tower.ln_final.weight)
        tm.final_layer_norm.bias.copy_(tower.ln_final.bias)
        projection = torch.nn.Linear(width, tower.text_projection.shape[1], bias=False)
        projection.weight.copy_(tower.text_projection.T)
    return model.eval(), projection


def pad_tokenizer(tokenizer):
    """The tokenizer of an OpenCLIP tower in diffusers' layout: pad token "!" (id 0)."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token = "!"
    return tokenizer


@torch.inference_mode()
def forge_loader(checkpoint):
    sd = copy.deepcopy(checkpoint)
    family = getattr(sd, "family", "sd1")
    if family == "sdxl":
        clip_g, projection = transformers_clip(sd.bigg.model)
        parts = (sd.unet, sd.clip_l, clip_g, projection)
        for part in parts:
            _inference_weights(part)
        return StableDiffusionXL(forge_layers(integrate(sd.unet)), sd.clip_l, clip_g, projection, sd.tokenizer, pad_tokenizer(sd.tokenizer))
    if family == "sd2":
        clip_h, _ = transformers_clip(sd.cond_stage_model.model, SD2_TEXT_LAYERS)
        for part in (sd.unet, clip_h):
            _inference_weights(part)
        return StableDiffusion2(forge_layers(integrate(sd.unet)), clip_h, pad_tokenizer(sd.tokenizer))
    for part in (sd.unet, sd.text_model):
        _inference_weights(part)
    return StableDiffusion(forge_layers(integrate(sd.unet)), sd.text_model, sd.tokenizer)
