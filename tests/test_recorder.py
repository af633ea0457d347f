"""Cross-attention recording on ldm's real UNetModel / CrossAttention."""

import math

import pytest
import torch
from modules import sd_hijack_optimizations  # the WebUI stand-in's attention kernels (tests/a1111)

from tsam_ext.runtime import sd1
from tsam_ext.core.recorder import PassComplete, Recorder, UnsupportedUNet, attention_levels, head_probs, level_grid


def all_attn2(unet):
    return {name: m for name, m in unet.named_modules() if name.endswith("attn2")}


def observe_queries(unet, run):
    """name -> number of queries each attn2 layer saw in one pass."""
    seen, handles = {}, []
    for name, m in all_attn2(unet).items():
        handles.append(m.register_forward_pre_hook(lambda mod, a, n=name: seen.__setitem__(n, a[0].shape[1])))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("hw", [(32, 32), (24, 40), (16, 48), (8, 8)])
def test_selected_layers_are_exactly_those_at_latent_over_4(small_sd, hw):
    unet = small_sd.unet
    cond = torch.randn(1, 77, 768)
    seen = observe_queries(unet, lambda: unet(torch.randn(1, 4, *hw), torch.tensor([10.0]), context=cond))
    gh, gw = math.ceil(hw[0] / 4), math.ceil(hw[1] / 4)
    at_quarter = {n for n, q in seen.items() if q == gh * gw}
    selected = {n for n, m in all_attn2(unet).items() if any(m is s for s in Recorder(unet).layers)}
    assert level_grid(hw) == (gh, gw)
    if gh * gw != math.ceil(gh / 2) * math.ceil(gw / 2):  # levels distinguishable by size
        assert selected == at_quarter
    assert sorted(selected) == ["input_blocks.7.1.transformer_blocks.0.attn2", "input_blocks.8.1.transformer_blocks.0.attn2",
                                "output_blocks.3.1.transformer_blocks.0.attn2", "output_blocks.4.1.transformer_blocks.0.attn2",
                                "output_blocks.5.1.transformer_blocks.0.attn2"]


def test_levels_follow_downsampling_not_indices():
    """A UNet with another layout (SD2-like heads, attention at every level) is read from its structure."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**dict(sd1.UNET_CONFIG, model_channels=32, channel_mult=[1, 2, 2], attention_resolutions=[1, 2, 4],
                            num_heads=-1, num_head_channels=16, context_dim=64, use_linear_in_transformer=True))
    levels = [lv for _, lv in attention_levels(unet)]
    assert levels == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1, 0, 0, 0]
    assert len(Recorder(unet).layers) == 5 + 1  # 2 down, the middle (at level 2 here), 3 up


def test_unsupported_unet_is_refused():
    with pytest.raises(UnsupportedUNet):
        Recorder(torch.nn.Linear(2, 2))


def test_recording_leaves_outputs_unchanged_and_nothing_outside_the_scope(small_sd):
    unet, cond = small_sd.unet, torch.randn(2, 154, 768)
    x, t = torch.randn(2, 4, 24, 32), torch.tensor([500.0, 20.0])
    with torch.no_grad():
        plain = unet(x, t, context=cond)
        rec = Recorder(unet)
        with rec.record((24, 32), truncate=False) as r:
            hooked = unet(x, t, context=cond)
        after = unet(x, t, context=cond)
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    assert r.maps.shape == (2, 6, 8, 154)
    torch.testing.assert_close(r.maps.sum(-1), torch.ones(2, 6, 8))  # probabilities over the tokens
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in unet.modules())


def layer_calls(layers, run):
    """(x, context, output) of each layer's call in ``run()``, captured around whatever kernel runs."""
    calls, handles = {}, []
    for m in layers:
        def hook(module, args, kwargs, out):
            calls[module] = (args[0], kwargs.get("context", args[1] if len(args) > 1 else None), out)
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [calls[m] for m in layers]


def output_from_probs(layer, probs, context_v):
    """The layer's output rebuilt from per-head probabilities [N, H, n_q, S]: to_out(P @ v)."""
    v = layer.to_v(context_v)
    v = v.reshape(v.shape[0], v.shape[1], layer.heads, -1).transpose(1, 2)
    out = (probs @ v).transpose(1, 2).reshape(probs.shape[0], probs.shape[2], -1)
    return layer.to_out(out)


@pytest.mark.parametrize("optimizer", list(sd_hijack_optimizations.OPTIMIZERS))
def test_recorded_maps_are_the_probabilities_behind_each_layers_real_output(small_sd, optimizer):
    """Independent of how the recorder computes: the per-head probabilities it records, applied
    to the layer's values, give the output the layer's own kernel produced (for every kernel of
    the WebUI stand-in, none of which exposes its probabilities); the maps are their mean."""
    unet = small_sd.unet
    rec = Recorder(unet)
    x, t, cond = torch.randn(2, 4, 16, 24), torch.tensor([400.0, 30.0]), torch.randn(2, 77, 768)
    try:
        sd_hijack_optimizations.apply(optimizer)
        with torch.no_grad():
            calls = layer_calls(rec.layers, lambda: unet(x, t, context=cond))
            maps = rec.run(lambda: unet(x, t, context=cond), (16, 24), truncate=False)
    finally:
        sd_hijack_optimizations.undo()
    per_layer = []
    with torch.no_grad():
        for layer, (h, context, out) in zip(rec.layers, calls):
            probs = head_probs(layer, h, context)
            torch.testing.assert_close(output_from_probs(layer, probs, context), out, atol=2e-5, rtol=1e-4)
            per_layer.append(probs.mean(1))
    torch.testing.assert_close(maps, torch.stack(per_layer).mean(0).reshape(2, 4, 6, 77))


def test_layer_without_scale_attribute_gets_the_standard_scale(small_sd):
    """Forge's attention modules have no ``scale``: dim_head ** -0.5, as ldm sets it."""
    layer = Recorder(small_sd.unet).layers[0]
    h, context = torch.randn(1, 16, layer.to_q.in_features), torch.randn(1, 77, 768)
    with torch.no_grad():
        expected = head_probs(layer, h, context)
        scale = layer.scale
        del layer.scale
        try:
            got = head_probs(layer, h, context)
        finally:
            layer.scale = scale
    torch.testing.assert_close(got, expected)


def test_truncated_pass_stops_after_the_last_selected_layer(small_sd):
    unet = small_sd.unet
    ran = []
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: ran.append(i)) for i, b in enumerate(unet.output_blocks)]
    try:
        Recorder(unet).run(lambda: unet(torch.randn(1, 4, 16, 16), torch.tensor([1.0]), context=torch.randn(1, 77, 768)), (16, 16))
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1, 2, 3, 4, 5]  # output_blocks 6..11 (the 2x and 4x-resolution decoder) never run


def test_pass_complete_is_invisible_to_except_exception():
    assert not issubclass(PassComplete, Exception)
