"""The host-free guidance step on the real ldm UNet and CLIP (peaky random weights)."""

import pytest
import torch

from tsam_ext.core.guidance import BatchLimit, RowTarget, guidance_step, row_losses
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.schedule import Refinement

HW = (16, 16)
T_STEP = 700.0


def setup(small_sd, targets_of, prompts, seed=0):
    rows, conds = [], []
    for i, p in enumerate(prompts):
        chunks, cond = targets_of(p)
        rows.append(RowTarget(i, chunks))
        conds.append(cond)
    length = max(c.shape[1] for c in conds)
    cond = torch.cat([torch.cat([c, c[:, -1:].expand(1, length - c.shape[1], -1)], 1) for c in conds])
    calls = []

    def run_unet(z_rows, ids):
        calls.append(list(ids))
        t = torch.full((len(ids),), T_STEP)
        return small_sd.apply_model(z_rows, t, cond[ids])

    z = torch.randn(len(prompts), 4, *HW, generator=torch.Generator().manual_seed(seed))
    return z, rows, run_unet, calls


def loss_at(small_sd, z, rows, run_unet):
    rec = Recorder(small_sd.unet)
    with torch.no_grad():
        maps = rec.run(lambda: run_unet(z, list(range(len(rows)))), HW)
    return row_losses(maps, rows, "reference", True)


def test_one_step_lowers_the_loss(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock"])
    out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), alpha=20.0)
    before, after = loss_at(small_sd, z, rows, run_unet), loss_at(small_sd, out.z, rows, run_unet)
    assert out.delta.abs().max() > 0
    assert out.z.dtype == z.dtype and torch.equal(out.z, z + out.delta)  # the step returns z - alpha_t grad
    assert out.losses[0][0] == pytest.approx(before.item(), rel=1e-5)
    assert after.item() < before.item()


def test_paper_loss_step_lowers_the_paper_loss(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a red cube on a blue sphere"])
    rec = Recorder(small_sd.unet)
    out = guidance_step(z, rows, run_unet, rec, alpha=2.0, loss="paper")
    with torch.no_grad():
        after = row_losses(rec.run(lambda: run_unet(z + out.delta, [0]), HW), rows, "paper", True)
    assert after.item() < out.losses[0][0]


@pytest.mark.parametrize("prompt,loss", [("", "reference"), ("cat", "reference"), ("a cat", "reference"),
                                         ("", "paper"), ("cat", "paper")])
def test_too_short_prompts_change_nothing_and_run_nothing(small_sd, targets_of, prompt, loss):
    z, rows, run_unet, calls = setup(small_sd, targets_of, [prompt])
    out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), alpha=5.0, loss=loss)
    assert torch.count_nonzero(out.delta) == 0 and not calls and out.passes == 0
    assert "fewer than" in out.skipped[0]


def test_batch_gives_each_image_its_own_gradient(small_sd, targets_of):
    prompts = ["a black car and a white clock", "a cat", "a dog chasing a red ball in a park"]
    z, rows, run_unet, calls = setup(small_sd, targets_of, prompts)
    rec = Recorder(small_sd.unet)
    batched = guidance_step(z, rows, run_unet, rec, alpha=5.0)
    assert calls == [[0, 2]]  # one pass for the batch; the 2-token prompt is not run
    for i in (0, 2):
        zi, ri, run_i, _ = setup(small_sd, targets_of, [prompts[i]])
        zi = z[i:i + 1]
        alone = guidance_step(zi, ri, run_i, rec, alpha=5.0)
        torch.testing.assert_close(batched.delta[i:i + 1], alone.delta, atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(batched.delta[1]) == 0


def test_long_prompt_chunks_are_guided_separately(small_sd, targets_of):
    long = ", ".join(["a small red apple"] * 25)  # 124 tokens: two chunks
    z, rows, run_unet, _ = setup(small_sd, targets_of, [long])
    assert [c.n for c in rows[0].chunks] == [75, 49] and [c.offset for c in rows[0].chunks] == [0, 77]
    out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), alpha=5.0)
    assert out.delta.abs().max() > 0


def test_only_the_latent_gets_gradients_and_parameters_are_restored(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock"])
    rec = Recorder(small_sd.unet)
    seen = []
    hook = small_sd.unet.input_blocks[1].register_forward_pre_hook(
        lambda m, a: seen.append(any(p.requires_grad for p in small_sd.unet.parameters())))
    try:
        guidance_step(z, rows, run_unet, rec, alpha=5.0)
    finally:
        hook.remove()
    assert seen == [False]
    assert all(p.requires_grad for p in small_sd.unet.parameters())
    assert all(p.grad is None for p in small_sd.parameters())

    def failing(z_rows, ids):
        raise ValueError("boom")
    with pytest.raises(ValueError):
        guidance_step(z, rows, failing, rec, alpha=5.0)
    assert all(p.requires_grad for p in small_sd.unet.parameters())


def test_grad_mode_is_enabled_inside_even_under_no_grad(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock"])
    with torch.no_grad():
        out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), alpha=5.0)
    assert out.delta.abs().max() > 0 and not out.delta.requires_grad


def test_non_finite_image_is_left_unchanged_and_others_move(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock", "a dog chasing a red ball"])
    z[1, 0, 0, 0] = float("nan")
    out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), alpha=5.0)
    assert out.skipped == {1: "loss or gradient is not finite"}
    assert torch.count_nonzero(out.delta[1]) == 0 and out.delta[0].abs().max() > 0


def test_refinement_follows_the_reference_rule(small_sd, targets_of):
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock"])
    rec = Recorder(small_sd.unet)
    no_conv = dict(tolerance=0.0)
    low = guidance_step(z, rows, run_unet, rec, 5.0, refinement=Refinement(iterations=3, extra=2, **no_conv))
    # random-weight losses sit below the threshold 0.14 * 6: 3 updates, 2 more, then the step's own
    assert low.losses[0][2] <= 0.84 and low.passes == 6
    high = guidance_step(z, rows, run_unet, rec, 5.0, refinement=Refinement(3, 2, threshold_scale=0.0, **no_conv))
    assert high.passes == 4  # above the threshold: the reference stops after its iterations
    conv = guidance_step(z, rows, run_unet, rec, 5.0,
                         refinement=Refinement(20, 10, tolerance=0.5, patience=2, early_stop=True))
    assert conv.passes == 3  # converged (changed less than 50% over 2 updates): stop at once


def test_gamma_order_changes_nothing_under_the_reference_loss(small_sd, targets_of):
    """The two orders give T's rows in the same direction (power then normalise, or normalise then
    power: a positive scale per row apart); the reference loss compares rows by cosine, which
    ignores that scale, so the step is the same; the paper loss (|T - S|) sees it."""
    prompt = "a black car and a white clock"
    z, _, run_unet, _ = setup(small_sd, targets_of, [prompt])
    rec = Recorder(small_sd.unet)
    t = {order: targets_of(prompt, 3.0, order)[0][0].t for order in ("reference", "paper")}
    causal = torch.ones_like(t["paper"], dtype=torch.bool).tril()  # T[i, j] = 0 for j > i
    scale = (t["paper"] / t["reference"]).where(causal, (t["paper"] / t["reference"]).diagonal()[:, None])
    assert not torch.allclose(t["paper"], t["reference"], rtol=0.1)
    torch.testing.assert_close(scale, scale[:, :1].expand_as(scale), rtol=1e-4, atol=0)
    steps = {(order, loss): guidance_step(z, [RowTarget(0, targets_of(prompt, 3.0, order)[0])], run_unet, rec, 5.0,
                                          loss=loss)
             for order in ("reference", "paper") for loss in ("reference", "paper")}
    same, other = steps[("reference", "reference")], steps[("paper", "reference")]
    assert other.losses[0][0] == pytest.approx(same.losses[0][0], rel=1e-5)
    torch.testing.assert_close(other.delta, same.delta, atol=1e-5 * float(same.delta.abs().max()), rtol=0)
    paper_change = steps[("paper", "paper")].delta - steps[("reference", "paper")].delta
    assert paper_change.abs().max() > 0.1 * steps[("reference", "paper")].delta.abs().max()


def test_interrupt_stops_between_passes(small_sd, targets_of):
    z, rows, run_unet, calls = setup(small_sd, targets_of, ["a black car and a white clock"])
    out = guidance_step(z, rows, run_unet, Recorder(small_sd.unet), 5.0, refinement=Refinement(),
                        should_stop=lambda: len(calls) >= 2)
    assert out.interrupted and out.passes == 2


def test_autocast_low_precision_model_computes_the_loss_in_float32(small_sd, targets_of):
    """As A1111 runs fp16 on CUDA (autocast); bfloat16 autocast is the CPU's equivalent."""
    z, rows, run_unet, _ = setup(small_sd, targets_of, ["a black car and a white clock"])
    rec = Recorder(small_sd.unet)
    full = guidance_step(z, rows, run_unet, rec, 5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = guidance_step(z, rows, run_unet, rec, 5.0, keep_maps=True)
    assert low.delta.dtype == torch.float32 and low.maps[0].dtype == torch.float32 and low.maps[0].shape == (4, 4, 77)
    assert low.losses[0][0] == pytest.approx(full.losses[0][0], rel=0.05)
    cos = torch.nn.functional.cosine_similarity(low.delta.flatten(), full.delta.flatten(), dim=0)
    assert cos > 0.9


def test_float16_backward_scales_the_loss_and_matches_float32(small_sd, targets_of):
    """A1111's CUDA default (fp16 under autocast) run on the CPU's fp16 autocast: the gradient is
    finite and within 1.5% (relative L2) of float32's. Unscaled, small fp16 gradients underflow
    inside the UNet (2.6% here, 4x the scaled error); an overflowing scale backs off by itself."""
    chunks, cond = targets_of("a black car and a white clock")
    rows, hw = [RowTarget(0, chunks)], (32, 32)
    z = torch.randn(1, 4, *hw, generator=torch.Generator().manual_seed(0))
    run_unet = lambda z_rows, ids: small_sd.apply_model(z_rows, torch.full((len(ids),), T_STEP), cond[ids])  # noqa: E731
    rec = Recorder(small_sd.unet)
    full = guidance_step(z, rows, run_unet, rec, 1.0).delta

    def fp16(limit):
        with torch.autocast("cpu", dtype=torch.float16):
            return guidance_step(z, rows, run_unet, rec, 1.0, limit=limit).delta

    def error(delta):
        assert torch.isfinite(delta).all()
        return ((delta - full).norm() / full.norm()).item()

    scaled, unscaled = error(fp16(BatchLimit())), error(fp16(BatchLimit(loss_scale=1.0)))
    assert scaled < 0.015 and unscaled > 2 * scaled
    huge = BatchLimit(loss_scale=2.0 ** 24)
    assert error(fp16(huge)) < 0.015 and 1 < huge.loss_scale < 2.0 ** 24  # overflowed, then backed off
    assert guidance_step(z, rows, run_unet, rec, 1.0, limit=BatchLimit(loss_scale=3.0)).delta.equal(full)  # fp32: unscaled
