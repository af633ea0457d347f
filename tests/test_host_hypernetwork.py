"""Hypernetworks: every A1111 1.10.1 attention kernel passes the text through the loaded
hypernetworks before ``to_k`` / ``to_v``; the maps T-SAM records must be the layer's own."""

from contextlib import nullcontext

import pytest
import torch
from modules import sd_hijack_optimizations, shared
from modules.hypernetworks import hypernetwork
from test_recorder import layer_calls, output_from_probs

from tsam_ext.core.recorder import head_probs
from tsam_ext.host.a1111 import sampling


@pytest.fixture
def loaded(webui):
    """A trained-like hypernetwork on the 768-wide text (and the 320-wide attn1 context), loaded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = hypernetwork.Hypernetwork("test", enable_sizes=[768, 320], layer_structure=[1, 2, 1],
                                        activation_func="relu", weight_init="XavierNormal")
    shared.loaded_hypernetworks.append(net)
    yield net
    shared.loaded_hypernetworks.clear()
    for m in shared.sd_model.model.diffusion_model.modules():  # the "None" kernel attaches them to its layer
        for name in ("hyper_k", "hyper_v"):
            m._modules.pop(name, None)


def layer_check(recorder, optimizer):
    """Per recorded layer: (max error of to_out(P @ v) against the kernel's own output, the
    same with the keys read from the untransformed text)."""
    unet = recorder.unet
    x, t, cond = torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.randn(1, 77, 768)
    try:
        sd_hijack_optimizations.apply(optimizer)
        with torch.no_grad():
            calls = layer_calls(recorder.layers, lambda: unet(x, t, context=cond))
    finally:
        sd_hijack_optimizations.undo()
    errors = []
    with torch.no_grad():
        for layer, (h, context, out) in zip(recorder.layers, calls):
            context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)[1]
            own = output_from_probs(layer, head_probs(layer, h, recorder.key_context(layer, context)), context_v)
            plain = output_from_probs(layer, head_probs(layer, h, context), context_v)
            errors.append(((own - out).abs().max().item(), (plain - out).abs().max().item()))
    return errors


@pytest.mark.parametrize("optimizer", list(sd_hijack_optimizations.OPTIMIZERS))
def test_recorded_maps_are_the_layers_own_with_a_hypernetwork_loaded(webui, loaded, optimizer):
    recorder = sampling.recorder_for(shared.sd_model)
    for own, plain in layer_check(recorder, optimizer):
        assert own < 3e-5          # the probabilities behind the kernel's real output
        assert plain > 100 * own   # keys read from the raw text would not be (the check can fail)


def test_without_a_hypernetwork_the_host_recorder_reads_the_raw_text(webui):
    recorder = sampling.recorder_for(shared.sd_model)
    context = torch.randn(1, 77, 768)
    assert torch.equal(recorder.key_context(recorder.layers[0], context), context)
    assert all(own < 3e-5 for own, _ in layer_check(recorder, "sdp"))


def test_guided_generation_with_a_hypernetwork_loaded(webui, loaded):
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), steps=4, width=64, height=64)
    assert "T-SAM loss trace" in res.infotexts[0] and "T-SAM warning" not in res.infotexts[0]


def maps_and_grad(recorder, fused: bool, x, t, cond):
    unet = recorder.unet
    leaf = x.clone().requires_grad_(True)
    with torch.enable_grad(), recorder.fused() if fused else nullcontext():
        maps = recorder.run(lambda: unet(leaf, t, context=cond), (16, 16))
        grad, = torch.autograd.grad(maps[..., 1:6].pow(2).sum(), leaf)
    return maps.detach(), grad


@pytest.mark.parametrize("optimizer", list(sd_hijack_optimizations.OPTIMIZERS))
def test_guidance_pass_on_fused_attention_has_the_kernels_gradient(webui, loaded, optimizer):
    """The guidance pass runs the WebUI's own attention layers as torch's fused attention (with the
    hypernetworks' k and v): the same maps and gradient as the WebUI's kernel gives; an
    extension's own forward on a layer is left to run."""
    unet = shared.sd_model.model.diffusion_model
    recorder = sampling.recorder_for(shared.sd_model)
    x, t, cond = torch.randn(1, 4, 16, 16), torch.tensor([600.0]), torch.randn(1, 77, 768)
    other = [layer for name, layer in unet.named_modules() if name.endswith("output_blocks.4.1.transformer_blocks.0.attn1")][0]
    calls = []
    try:
        sd_hijack_optimizations.apply(optimizer)
        kernel = type(other).forward
        other.forward = lambda *a, **k: calls.append(1) or kernel(other, *a, **k)
        fused_layers = []
        hook = unet.register_forward_pre_hook(lambda m, a: fused_layers.extend(
            n for n, l in unet.named_modules() if "forward" in vars(l) and getattr(l.forward, "__name__", "") == "forward"
            and l is not other and hasattr(l, "to_q")))
        ref_maps, ref_grad = maps_and_grad(recorder, False, x, t, cond)
        maps, grad = maps_and_grad(recorder, True, x, t, cond)
        hook.remove()
    finally:
        sd_hijack_optimizations.undo()
        del other.forward
    torch.testing.assert_close(maps, ref_maps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-3)
    assert grad.abs().max() > 0 and len(calls) == 2  # the extension's forward ran in both passes
    n_attention = sum(1 for _, l in unet.named_modules() if hasattr(l, "to_q")) - 1
    assert len(fused_layers) == n_attention  # every other attention layer ran fused in the fused pass
    assert not any("forward" in vars(l) for l in unet.modules())
