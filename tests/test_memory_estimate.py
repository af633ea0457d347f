"""The guidance pass's memory known before it runs (core.memory_estimate, core.memory_plan): the
count against the CPU allocator's own peak, the fake copy that leaves the real UNet alone, the
choice of images per pass and checkpointing, and a guided generation on an emulated small card
that never runs out of memory."""

import importlib.util
import os

import pytest
import torch

from tsam_ext.core import controller, memory_plan
from tsam_ext.core.guidance import BatchLimit, frozen, pass_gradient
from tsam_ext.core.memory_estimate import PeakBytes
from tsam_ext.core.memory_plan import MARGIN, PassTooLarge, bare_unet_call, fit, image_rows, synthetic_rows, unet_estimate
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.settings import Settings
from tsam_ext.runtime import pipeline

_spec = importlib.util.spec_from_file_location(
    "memory_table", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "memory_table.py"))
memory_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory_table)

PROMPTS = ["a black car and a white clock", "a dog chasing a red ball"]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.fixture(scope="module")
def sd_sdpa():
    """SD 1.x's real UNet at 64 channels on torch's SDPA, as the runtime and A1111's "sdp" run it."""
    from tsam_ext.runtime import sd1
    from tsam_ext.runtime.model import use_sdpa

    return use_sdpa(sd1.build(model_channels=64, decoder=False, seed=0))


@pytest.mark.parametrize("images, side, checkpoint", [(1, 32, False), (2, 32, False), (1, 48, False), (2, 32, True)])
def test_estimate_is_within_10_percent_of_the_cpu_allocators_peak(sd_sdpa, images, side, checkpoint):
    z = torch.randn(images, 4, side, side)
    rows, text = synthetic_rows(images), memory_table.text_of("sd1", images)
    measured = memory_table.measured_peak(lambda: memory_table.real_pass(sd_sdpa.unet, text, z, rows, checkpoint))
    estimate = unet_estimate(Recorder(sd_sdpa.unet), text)(z, rows, checkpoint)
    assert abs(estimate - measured) <= 0.10 * measured, (estimate, measured)


def test_the_fake_trace_counts_what_the_real_pass_allocates(small_sd):
    """The same count on real tensors (computed) and on fake ones (traced): the fake mode changes nothing."""
    z, rows, text = torch.randn(2, 4, 16, 16), synthetic_rows(2), torch.zeros(2, 77, 768)
    run = bare_unet_call(text)
    real = PeakBytes()
    with real, frozen(small_sd.unet), torch.enable_grad():
        pass_gradient(z, [0, 1], rows, lambda zr, ids: run(small_sd.unet, zr, ids), Recorder(small_sd.unet),
                      "reference", True, True)
    assert real.peak > 0
    assert unet_estimate(Recorder(small_sd.unet), text)(z, rows, False) == real.peak


def test_the_estimate_grows_with_images_and_shrinks_checkpointed(small_sd):
    estimate = unet_estimate(Recorder(small_sd.unet), torch.zeros(1, 77, 768))
    one, two = (estimate(torch.zeros(k, 4, 16, 16), synthetic_rows(k), False) for k in (1, 2))
    assert 1.6 * one < two < 2.2 * one
    assert estimate(torch.zeros(2, 4, 16, 16), synthetic_rows(2), True) < 0.8 * two


def test_the_trace_touches_nothing_of_the_real_unet(small_sd):
    """Another extension's instance forward and hooks on the real UNet never run in the trace;
    the weights are not copied or changed; a layer's own bound kernel stays in the copy."""
    unet = small_sd.unet
    block = next(m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    calls = []
    block.forward = lambda *a, **k: calls.append("forward") or type(block).forward(block, *a, **k)
    handle = unet.register_forward_pre_hook(lambda *a: calls.append("hook"))
    before = {name: (p, p.detach().clone()) for name, p in unet.named_parameters()}
    try:
        estimate = unet_estimate(Recorder(unet), torch.zeros(1, 77, 768))(torch.zeros(1, 4, 16, 16), synthetic_rows(1), False)
    finally:
        del block.forward
        handle.remove()
    assert estimate > 0 and calls == []
    assert all(p is dict(unet.named_parameters())[n] and torch.equal(p, copy) for n, (p, copy) in before.items())
    assert all(p.requires_grad for p in unet.parameters())


def _peaks(plain_per_image, checkpointed_per_image, base=10):
    return lambda k, checkpoint: base + k * (checkpointed_per_image if checkpoint else plain_per_image)


def test_fit_keeps_the_limit_when_everything_fits():
    limit = BatchLimit()
    assert fit(_peaks(100, 40), 4, int(410 * MARGIN) + 1, limit) == (limit, None)


def test_fit_prefers_smaller_plain_groups_then_checkpointing():
    peak = _peaks(100, 40)
    chosen, note = fit(peak, 4, int(210 * MARGIN) + 1, BatchLimit())
    assert (chosen.images, chosen.checkpoint) == (2, False) and "2 image(s) per pass" in note
    chosen, _ = fit(peak, 4, int(170 * MARGIN) + 1, BatchLimit())
    assert (chosen.images, chosen.checkpoint) == (1, False)
    cheap = _peaks(100, 20)  # checkpointed, all four images (90) cost less than one plain (110)
    chosen, note = fit(cheap, 4, int(95 * MARGIN) + 1, BatchLimit())
    assert (chosen.images, chosen.checkpoint) == (None, True) and "with activation checkpointing" in note
    chosen, _ = fit(cheap, 4, int(60 * MARGIN) + 1, BatchLimit())
    assert (chosen.images, chosen.checkpoint) == (2, True)


def test_fit_respects_the_users_choices_and_says_when_nothing_fits():
    peak = _peaks(100, 40)
    chosen, _ = fit(peak, 4, 10 ** 6, BatchLimit(images=1, checkpoint=True))
    assert (chosen.images, chosen.checkpoint) == (1, True)
    with pytest.raises(PassTooLarge, match="even checkpointed with one image"):
        fit(peak, 4, 40, BatchLimit())


def test_image_rows_takes_the_images_with_most_rows():
    rows = synthetic_rows(1) + [r.__class__(1, r.chunks) for r in synthetic_rows(1, rows_per_image=3)]
    group = image_rows(rows, 1)
    assert len(group) == 3 and {r.image for r in group} == {0}


def _generate(small_sd, monkeypatch, free, oom_above=None):
    """Two prompts guided on a "card" with ``free`` bytes; the UNet raises CUDA's out-of-memory
    error for a guided call of more than ``oom_above`` rows."""
    monkeypatch.setattr(controller, "free_bytes", lambda device: free)
    ooms = []

    def emulated_card(module, args):
        if oom_above is not None and torch.is_grad_enabled() and args[0].shape[0] > oom_above:
            ooms.append(args[0].shape[0])
            raise torch.cuda.OutOfMemoryError(OOM)

    handle = small_sd.unet.register_forward_pre_hook(emulated_card)
    try:
        g = pipeline.generate(small_sd, PROMPTS, [1, 2], Settings(enabled=True, refine=False), steps=4, width=128,
                              height=128, decode=False, log=lambda _m: None)
    finally:
        handle.remove()
    return g, ooms


def test_a_card_with_room_for_one_image_gets_one_per_pass_and_no_out_of_memory(small_sd, monkeypatch):
    z, text = torch.zeros(1, 4, 16, 16), torch.zeros(1, 77, 768)
    one = unet_estimate(Recorder(small_sd.unet), text)(z, synthetic_rows(1), False)
    g, ooms = _generate(small_sd, monkeypatch, free=int(one * MARGIN) + 1, oom_above=1)
    assert ooms == [] and g.guided.stopped is None
    assert g.guided.limit.images == 1 and not g.guided.limit.checkpoint
    assert any("1 image(s) per pass" in w for w in g.guided.warnings)
    assert [sorted(s.losses) for s in g.guided.trace] == [[0, 1]] * len(g.guided.trace) and g.guided.trace


def test_without_a_plan_the_same_card_runs_out_of_memory_first(small_sd, monkeypatch):
    """The fallback chain alone: the first pass fails, then guidance recovers (what the plan avoids)."""
    g, ooms = _generate(small_sd, monkeypatch, free=None, oom_above=1)
    assert ooms and g.guided.limit.images == 1


def test_no_pass_fits_the_card_leaves_the_pass_unguided_with_a_reason(small_sd, monkeypatch):
    g, _ = _generate(small_sd, monkeypatch, free=1000)
    assert g.guided.trace == [] and "even checkpointed with one image" in g.guided.stopped
    assert g.latents.shape == (2, 4, 16, 16)


def test_on_a_cpu_nothing_is_traced_and_nothing_changes(small_sd, monkeypatch):
    monkeypatch.setattr(memory_plan, "pass_peak", lambda *a, **k: pytest.fail("traced on a CPU"))
    planned = pipeline.generate(small_sd, PROMPTS[:1], [1], Settings(enabled=True, refine=False), steps=4,
                                width=128, height=128, decode=False, log=lambda _m: None)
    assert planned.guided.warnings == [] and planned.guided.trace
