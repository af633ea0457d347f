"""bench/build_real_size_ckpt.py: the released models' key layout, shapes and sizes, the peaky
recipe and determinism, all without writing a checkpoint (key lists come from meta-device models)."""

import itertools
import math
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import build_real_size_ckpt as real  # noqa: E402


def _params(spec, prefix):
    return sum(math.prod(s) for k, s, d in spec if k.startswith(prefix) and d == torch.float16)


@pytest.fixture(scope="module")
def specs():
    return {f: real.spec(f) for f in real.FAMILIES}


def test_sdxl_base_layout(specs):
    s = {k: (shape, d) for k, shape, d in specs["sdxl"]}
    unet = "model.diffusion_model."
    assert round(_params(specs["sdxl"], unet) / 1e6, 1) == 2567.5  # SDXL base 1.0's UNet: 2,567,463,684
    assert round(_params(specs["sdxl"], "conditioner.embedders.0.transformer.text_model.") / 1e6, 2) == 123.06
    assert round(_params(specs["sdxl"], "conditioner.embedders.1.model.") / 1e6, 2) == 694.66
    assert round(_params(specs["sdxl"], "first_stage_model.") / 1e6, 2) == 83.65
    assert s[unet + "label_emb.0.0.weight"][0] == (1280, 2816)
    assert s[unet + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"][0] == (640, 2048)
    assert s[unet + "input_blocks.4.1.proj_in.weight"][0] == (640, 640)  # use_linear_in_transformer
    depth = lambda p: len({k.split(".transformer_blocks.")[1].split(".")[0] for k in s if k.startswith(unet + p) and ".transformer_blocks." in k})  # noqa: E731
    assert [depth(f"input_blocks.{i}.1.") for i in (4, 5, 7, 8)] == [2, 2, 10, 10]
    assert depth("middle_block.1.") == 10 and depth("output_blocks.0.1.") == 10 and depth("output_blocks.5.1.") == 2
    assert not any(k.startswith(unet + "input_blocks.1.1.") for k in s)  # level 0: no transformer
    assert sum(k.endswith("attn2.to_q.weight") for k in s) == 70
    clip = "conditioner.embedders.0.transformer.text_model."
    assert s[clip + "embeddings.token_embedding.weight"][0] == (49408, 768)
    assert s[clip + "embeddings.position_ids"] == ((1, 77), torch.int64)
    assert s[clip + "encoder.layers.11.self_attn.q_proj.weight"][0] == (768, 768)
    big = "conditioner.embedders.1.model."
    assert s[big + "transformer.resblocks.31.attn.in_proj_weight"][0] == (3840, 1280)
    assert s[big + "text_projection"][0] == (1280, 1280) and s[big + "logit_scale"][0] == ()
    assert not any(".visual." in k or k.startswith(big + "visual") for k in s)
    assert s["first_stage_model.encoder.mid.attn_1.q.weight"][0] == (512, 512, 1, 1)
    assert s["first_stage_model.quant_conv.weight"][0] == (8, 8, 1, 1)
    assert {k.split(".")[0] for k in s} == {"model", "conditioner", "first_stage_model"}


@pytest.mark.parametrize("family", ["sd21v", "sd21"])
def test_sd21_layout(specs, family):
    s = {k: (shape, d) for k, shape, d in specs[family]}
    assert round(_params(specs[family], "model.diffusion_model.") / 1e6, 2) == 865.91
    assert round(_params(specs[family], "cond_stage_model.model.") / 1e6, 2) == 354.03  # ViT-H-14 text tower
    assert s["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"][0] == (320, 1024)
    assert s["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"][0] == (3072, 1024)
    assert not any(k.startswith("cond_stage_model.model.transformer.resblocks.24.") for k in s)
    assert s["alphas_cumprod"] == ((1000,), torch.float32)
    assert abs(real.schedule_buffers()["alphas_cumprod"][-1].item() - 0.0047) < 1e-4
    assert real.V_BIAS_KEY in s
    assert {k.split(".")[0] for k in s if "." in k} == {"model", "cond_stage_model", "first_stage_model"}


def test_spec_matches_the_generated_tensors_and_is_deterministic(specs):
    first = list(itertools.islice(real.tensors("sdxl"), 40))  # time_embed, label_emb, input_blocks 0-2: ~30 M values
    assert [(k, tuple(t.shape), t.dtype) for k, t in first] == specs["sdxl"][:40]
    again = list(itertools.islice(real.tensors("sdxl"), 40))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))
    other = list(itertools.islice(real.tensors("sdxl", seed=1), 3))
    assert not torch.equal(first[0][1], other[0][1])
    zeroed = dict(first)["model.diffusion_model.input_blocks.1.0.out_layers.3.weight"].float()
    assert 0.0005 < zeroed.std().item() < 0.002  # zero_module()'d conv: small noise, not zeros


def test_peaky_unet_attn2_heads_tied_and_shared_per_level():
    peaky, heads = real.UnetPeaky(), {"a.attn2": 5, "b.attn2": 5}.get
    q0, q1 = nn.Linear(320, 320, bias=False), nn.Linear(320, 320, bias=False)
    out = nn.Linear(320, 320)
    with torch.no_grad():
        w0 = q0.weight.clone()
        peaky("a.attn2.to_q", q0, heads)
        peaky("b.attn2.to_q", q1, heads)
        w_out = out.weight.clone()
        peaky("a.ff.net.2", out, heads)
    w = q0.weight.view(5, 64, 320)
    assert torch.equal(w, (w0.view(5, 64, 320)[:1] * real.UNET_QK).expand_as(w))
    assert torch.equal(q1.weight, q0.weight)  # the second transformer of the level takes the first's q
    assert torch.allclose(out.weight, w_out * real.LEVEL_RES)


def test_peaky_text_towers():
    g = lambda k: real.generator(0, k)  # noqa: E731
    key = lambda p: "x." + p  # noqa: E731
    width, layers = 64, 4
    q, fc2 = nn.Linear(width, width), nn.Linear(4 * width, width)
    with torch.no_grad():
        real.init_clip("encoder.layers.0.self_attn.q_proj", q, width, layers, key, g)
        real.init_clip("encoder.layers.0.mlp.fc2", fc2, width, layers, key, g)
    std = width ** -0.5 * (2 * layers) ** -0.5
    assert abs(q.weight.std().item() / (std * real.TEXT_QK) - 1) < 0.1
    assert abs(fc2.weight.std().item() / (std * real.TEXT_RES) - 1) < 0.1
    assert not q.bias.any()
    attn = nn.MultiheadAttention(width, 4)
    with torch.no_grad():
        real.init_open_clip("transformer.resblocks.0.attn", attn, width, layers, key, g)
    w = attn.in_proj_weight
    ratio = w[:2 * width].std() / w[2 * width:].std()
    assert abs(ratio.item() / real.TEXT_QK - 1) < 0.1  # q and k scaled, v not
    a = torch.empty(3, 4)
    b = torch.empty(3, 4)
    real._normal(a, 1.0, real.generator(0, "k"))
    real._normal(b, 1.0, real.generator(0, "k"))
    assert torch.equal(a, b)
