"""The per-family readers and the runtime's SD 2.x and SDXL models, on the real parts: ldm's
UNet and FrozenOpenCLIPEmbedder, open_clip 2.20's text towers, transformers' CLIP, with the
real tokenizer; text targets checked against independent computations (tests/independent.py)."""

import pytest
import torch

import independent
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.encoders import BIGG, CLIP_L, aligned, chosen
from tsam_ext.families.open_clip import open_clip_self_attention, pad_after_end

PROMPT = "a black car and a white clock"


def ids_of(model, prompt=PROMPT):
    return torch.tensor([c.ids for c in model.chunks(prompt)])


def test_pad_after_end_is_the_webuis_open_clip_padding():
    ids = torch.tensor([[49406, 320, 1449, 49407, 49407, 49407], [49406, 49407, 49407, 49407, 49407, 49407]])
    assert pad_after_end(ids, 49407, 0).tolist() == [[49406, 320, 1449, 49407, 0, 0], [49406, 49407, 0, 0, 0, 0]]
    assert torch.equal(pad_after_end(ids, 49407, 49407), ids)  # CLIP-L pads with the end token itself
    with pytest.raises(ValueError, match="end token"):
        pad_after_end(torch.tensor([[49406, 320]]), 49407, 0)


def test_open_clip_reader_reads_every_block_as_pytorch_weighs_it(small_sd2):
    tower = small_sd2.cond_stage_model.model
    ids = pad_after_end(ids_of(small_sd2), 49407, 0)
    ours = open_clip_self_attention(tower, ids)
    with torch.no_grad():
        theirs = independent.open_clip_attention(tower, ids)
    assert ours.shape == (1, 24, 16, 77, 77) and ours.dtype == torch.float32
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], atol=1e-6, rtol=1e-5)  # the same input: the same weights
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-3)  # deeper, the two kernels' rounding adds up
    assert torch.count_nonzero(ours.triu(1)) == 0
    assert not any(block.attn._forward_pre_hooks for block in tower.transformer.resblocks)


def test_sd2_target_reads_the_block_the_webuis_conditioning_skips(small_sd2):
    """ldm's penultimate-layer conditioning runs 23 of 24 blocks; T averages all 24."""
    embedder = small_sd2.cond_stage_model
    ids = pad_after_end(ids_of(small_sd2), 49407, 0)
    ran = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a, k: ran.append(m), with_kwargs=True)
             for b in embedder.model.transformer.resblocks]
    try:
        with torch.no_grad():
            embedder.encode_with_transformer(ids)
    finally:
        for h in hooks:
            h.remove()
    assert len(ran) == 23
    att = open_clip_self_attention(embedder.model, ids)
    assert att.shape[1] == 24
    n = 7
    torch.testing.assert_close(text_target(att[0], n), independent.text_target(att[0], n, 3.0, "reference").float())
    assert not torch.allclose(text_target(att[0], n), text_target(att[0, :23], n))  # the 24th block counts


def test_targets_of_two_encoders_weigh_each_encoder_equally(small_sdxl):
    att = small_sdxl.self_attention(small_sdxl.chunks(PROMPT))
    pair = [att[CLIP_L][0], att[BIGG][0]]
    assert pair[0].shape[:2] == (12, 12) and pair[1].shape[:2] == (32, 20)
    for order in ("reference", "paper"):
        ours = text_target(pair, 7, 3.0, order)
        torch.testing.assert_close(ours, independent.text_target_of_encoders(pair, 7, 3.0, order).float())
    pooled = torch.cat([a.reshape(-1, 77, 77) for a in pair])[None]  # one mean over all 784 maps: bigG would weigh 82%
    assert not torch.allclose(text_target(pair, 7), text_target(pooled, 7), atol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        text_target([pair[0], pair[1][..., :70, :70]], 7)


def test_sdxl_target_from_the_runtime_equals_the_independent_one(small_sdxl):
    ids = ids_of(small_sdxl)
    with torch.no_grad():
        clip = independent.clip_attention(small_sdxl.clip_l, ids)[0]
        bigg = independent.open_clip_attention(small_sdxl.bigg.model, pad_after_end(ids, 49407, 0))[0]
    att = small_sdxl.self_attention(small_sdxl.chunks(PROMPT))
    torch.testing.assert_close(text_target([att[CLIP_L][0], att[BIGG][0]], 7),
                               independent.text_target_of_encoders([clip, bigg], 7, 3.0, "reference").float())


def test_encoder_choice():
    assert chosen(["clip-l", "bigg"], "both") == ("clip-l", "bigg")
    assert chosen(["clip-l", "bigg"], "bigg") == ("bigg",)
    assert chosen(["openclip-h"], "clip-l") == ("openclip-h",)  # one encoder: the setting does not apply
    assert chosen(["bigg"], "clip-l") == ("bigg",)                # the SDXL refiner
    same = {"clip-l": [(1, 2, 3)], "bigg": [(1, 2, 3)]}
    assert aligned(same, ("clip-l", "bigg")) == ("clip-l", "bigg")
    assert aligned({"clip-l": [(1, 2, 3)], "bigg": [(1, 5, 3)]}, ("clip-l", "bigg")) == ("bigg",)


def test_sdxl_unet_has_sgms_layout(small_sdxl):
    from ldm.modules.attention import CrossAttention

    names = [n for n, m in small_sdxl.unet.named_modules() if n.endswith("attn2")]
    assert len(names) == 70
    assert "input_blocks.7.1.transformer_blocks.9.attn2" in names and "middle_block.1.transformer_blocks.9.attn2" in names
    recorder = Recorder(small_sdxl.unet)
    by_module = {m: n for n, m in small_sdxl.unet.named_modules()}
    selected = [by_module[m] for m in recorder.layers]
    assert len(selected) == 60 and all(type(m) is CrossAttention for m in recorder.layers)
    assert selected[0] == "input_blocks.7.1.transformer_blocks.0.attn2"
    assert selected[-1] == "output_blocks.2.1.transformer_blocks.9.attn2"


def test_sdxl_vector_feeds_the_unet(small_sdxl):
    chunks = small_sdxl.chunks(PROMPT)
    small, large = small_sdxl.conditioning(chunks, (256, 256)), small_sdxl.conditioning(chunks, (512, 768))
    assert small["crossattn"].shape == (1, 77, 96 + 160) and small["vector"].shape == (1, 160 + 6 * 256)
    torch.testing.assert_close(small["crossattn"], large["crossattn"])
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0])
    with torch.no_grad():
        assert not torch.allclose(small_sdxl.apply_model(x, t, small), small_sdxl.apply_model(x, t, large))


def test_sdxl_conditioning_equals_sgms_conditioner(small_sdxl, standins):
    """The runtime's SDXL conditioning (written here) against the sgm GeneralConditioner stand-in
    behind the WebUI's ``get_learned_conditioning``, on the same weights: texts, sizes, an empty
    negative prompt (all text parts zero), a two-chunk prompt (pooled vector of the first chunk)."""
    from modules.prompt_parser import SdConditioning

    sd_model = standins["sdxl"]
    long = " ".join(["red apple green pear"] * 25)
    for prompt, negative in ((PROMPT, False), ("", True), (long, False)):
        batch = SdConditioning([prompt], width=384, height=256, is_negative_prompt=negative)
        with torch.no_grad():
            webui = sd_model.get_learned_conditioning(batch)
        ours = small_sdxl.conditioning(small_sdxl.chunks(prompt), (256, 384), negative=negative)
        assert webui.keys() == ours.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], webui[key], atol=1e-5, rtol=1e-5)
    assert ours["crossattn"].shape[1] == 154
