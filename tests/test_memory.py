"""Memory: the checkpointed guidance pass on ldm's real transformer blocks (same gradient), and
the out-of-memory fallbacks (checkpointing, then smaller groups, then a skipped step)."""

from contextlib import nullcontext

import pytest
import torch
from modules import shared

from tsam_ext.core import recorder as recorder_module
from tsam_ext.core.checkpointing import BLOCK, checkpointed
from tsam_ext.core.guidance import OUT_OF_MEMORY, BatchLimit, guidance_step
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.schedule import Refinement
from test_guidance import setup

PROMPTS = ["a black car and a white clock", "a dog chasing a red ball", "two birds on a green fence"]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def blocks(unet):
    return [m for m in unet.modules() if type(m).__name__ == BLOCK]


def count_block_runs(unet):
    """A list that grows by one each time a transformer block's self-attention runs (forward or recompute)."""
    runs = []
    handles = [b.attn1.register_forward_pre_hook(lambda *a: runs.append(1)) for b in blocks(unet)]
    return runs, handles


@pytest.mark.parametrize("truncate", [True, False])
def test_checkpointed_pass_gives_the_same_gradient(small_sd, targets_of, truncate):
    z, rows, run_unet, _ = setup(small_sd, targets_of, PROMPTS[:2])
    rec = Recorder(small_sd.unet)
    plain = guidance_step(z, rows, run_unet, rec, 5.0, truncate=truncate)
    runs, handles = count_block_runs(small_sd.unet)
    try:
        ckpt = guidance_step(z, rows, run_unet, rec, 5.0, truncate=truncate, limit=BatchLimit(checkpoint=True))
    finally:
        for h in handles:
            h.remove()
    assert plain.delta.abs().max() > 0
    assert torch.equal(ckpt.delta, plain.delta) and ckpt.losses == plain.losses
    forward = 10 if truncate else 16  # blocks up to output_blocks.5 (truncated) or all 16
    assert len(runs) == forward + 10  # the 10 blocks the loss depends on ran again in the backward
    assert not any("forward" in vars(b) for b in blocks(small_sd.unet))


def test_checkpointed_recording_keeps_its_own_saved_tensors(small_sd, targets_of, monkeypatch):
    """Without the recorder's own saved-tensor hooks, the checkpoint would drop the recorder's
    tensors and, recomputing the block without the hook, fail: recording and checkpointing compose
    only through ``keep_saved``."""
    z, rows, run_unet, _ = setup(small_sd, targets_of, PROMPTS[:1])
    monkeypatch.setattr(recorder_module, "keep_saved", nullcontext)
    with pytest.raises(torch.utils.checkpoint.CheckpointError):
        guidance_step(z, rows, run_unet, Recorder(small_sd.unet), 5.0, limit=BatchLimit(checkpoint=True))


def test_checkpointing_wraps_and_restores_another_extensions_block_forward(small_sd):
    block = blocks(small_sd.unet)[0]
    calls = []

    def other(x, context=None):
        calls.append(torch.is_grad_enabled())
        return type(block).forward(block, x, context=context)

    block.forward = other
    try:
        with checkpointed(small_sd.unet) as n:
            assert n == 16 and block.forward is not other
            x = torch.randn(1, 16, block.attn1.to_q.in_features, requires_grad=True)
            block(x, context=torch.randn(1, 77, 768)).sum().backward()
        assert block.forward is other and len(calls) == 2  # the forward, then its recomputation
    finally:
        del block.forward


def test_out_of_memory_falls_back_to_checkpointing_then_smaller_groups_then_skips(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, PROMPTS)
    rec = Recorder(small_sd.unet)
    reference = guidance_step(z, rows, run_unet, rec, 5.0)

    def failing_while(condition, limit):
        def run(z_rows, ids):
            if condition(limit, ids):
                raise torch.cuda.OutOfMemoryError(OOM)
            return run_unet(z_rows, ids)
        return run

    limit = BatchLimit()  # stage 1: only the plain pass is too big
    out = guidance_step(z, rows, failing_while(lambda lim, ids: not lim.checkpoint, limit), rec, 5.0, limit=limit)
    assert limit.checkpoint and limit.images is None and torch.equal(out.delta, reference.delta)
    assert out.notes == ["out of memory: the guidance pass now runs with activation checkpointing (slower, same result)"]

    limit = BatchLimit()  # stage 2: even checkpointed, only one image fits
    out = guidance_step(z, rows, failing_while(lambda lim, ids: len(ids) > 1, limit), rec, 5.0, limit=limit)
    assert limit.checkpoint and limit.images == 1
    torch.testing.assert_close(out.delta, reference.delta, atol=1e-5, rtol=1e-4)
    assert out.notes[1:] == ["out of memory: guidance now runs 1 image(s) per pass"]
    again = guidance_step(z, rows, failing_while(lambda lim, ids: len(ids) > 1, limit), rec, 5.0, limit=limit)
    assert not again.notes  # the sampling pass keeps what it learnt

    limit = BatchLimit()  # stage 3: nothing fits: the step is skipped, nothing raises
    out = guidance_step(z, rows, failing_while(lambda lim, ids: True, limit), rec, 5.0, limit=limit)
    assert out.skipped == {0: OUT_OF_MEMORY, 1: OUT_OF_MEMORY, 2: OUT_OF_MEMORY}
    assert torch.count_nonzero(out.delta) == 0 and out.passes == 0

    def other_error(z_rows, ids):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not memory: no fallback hides it
        guidance_step(z, rows, other_error, rec, 5.0, limit=BatchLimit())


def test_out_of_memory_during_refinement_keeps_the_updates_made(small_sd, targets_of):
    z, rows, run_unet, calls = setup(small_sd, targets_of, PROMPTS[:1])

    def run(z_rows, ids):
        if len(calls) >= 3:
            raise torch.cuda.OutOfMemoryError(OOM)
        return run_unet(z_rows, ids)
    out = guidance_step(z, rows, run, Recorder(small_sd.unet), 5.0, refinement=Refinement(iterations=5, tolerance=0.0))
    assert out.passes == 3 and len(out.losses[0]) == 3 and out.delta.abs().max() > 0 and not out.skipped
    assert out.notes[-1] == f"image 1: {OUT_OF_MEMORY}: refinement cut short"


def checkpointed_now(unet) -> bool:
    return any("forward" in vars(b) for b in blocks(unet))


@pytest.mark.parametrize("stage", ["plain", "checkpointed", "always"])
def test_host_out_of_memory_at_each_stage_gives_an_image_and_a_warning(webui, stage):
    """Through the WebUI stand-in: an out-of-memory at each stage of the fallback is injected into
    the guidance passes (autograd on); the next fallback runs, the user is told, the image comes."""
    unet = shared.sd_model.model.diffusion_model
    fits = {"plain": lambda: checkpointed_now(unet), "checkpointed": lambda: False, "always": lambda: False}[stage]
    guided = []

    def memory(module, args):
        if torch.is_grad_enabled():
            guided.append(checkpointed_now(unet))
            if not fits():
                raise torch.cuda.OutOfMemoryError(OOM)
    handle = unet.register_forward_pre_hook(memory)
    try:
        _, res = webui.generate(tsam=dict(enabled=True, refine=False), steps=4, width=64, height=64)
    finally:
        handle.remove()
    info = res.infotexts[0]
    assert len(res.latents) == 1 and "T-SAM gamma" in info
    assert "activation checkpointing" in info
    if stage == "plain":
        assert "T-SAM loss trace" in info and guided[:2] == [False, True] and all(guided[1:])
    else:
        assert OUT_OF_MEMORY in info and "T-SAM loss trace" not in info
        assert guided[:2] == [False, True]  # plain, then checkpointed (one image: nothing smaller to try)


def test_settings_option_forces_the_checkpointed_pass(webui):
    unet = shared.sd_model.model.diffusion_model
    seen = []
    handle = unet.register_forward_pre_hook(
        lambda m, a: seen.append(checkpointed_now(unet)) if torch.is_grad_enabled() else None)
    shared.opts.tsam_checkpoint = True
    try:
        _, forced = webui.generate(tsam=dict(enabled=True, refine=False), steps=3, width=64, height=64)
    finally:
        del shared.opts.data["tsam_checkpoint"]
    n = len(seen)
    try:
        _, plain = webui.generate(tsam=dict(enabled=True, refine=False), steps=3, width=64, height=64)
    finally:
        handle.remove()
    assert seen[:n] and all(seen[:n]) and not any(seen[n:])
    assert torch.equal(forced.latents[0], plain.latents[0])  # same gradient, same image


def test_checkpointed_blocks_recompute_with_the_options_they_saw():
    """Forge passes every transformer block one ``transformer_options`` dict and rewrites its
    ``block_index`` before each block; a block-keyed patch must run on the same block in the
    recompute (before: the backward's recompute saw the last block's index, a wrong gradient)."""
    from tsam_ext.core.checkpointing import checkpointed

    class BasicTransformerBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x, transformer_options={}):
            scale = {0: 1.0, 1: 3.0}[transformer_options["block_index"]]  # a patch keyed on the block
            return torch.tanh(self.lin(x) * scale)

    torch.manual_seed(0)
    blocks = torch.nn.Sequential(BasicTransformerBlock(), BasicTransformerBlock())

    def run(x):
        options = {}
        for i, block in enumerate(blocks):
            options["block_index"] = i
            x = block(x, transformer_options=options)
        return x.square().sum()

    x = torch.randn(3, 4, requires_grad=True)
    plain, = torch.autograd.grad(run(x), x)
    with checkpointed(blocks):
        again, = torch.autograd.grad(run(x), x)
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
