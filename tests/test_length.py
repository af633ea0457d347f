"""Length scaling (core/length.py): the reference's prompts unchanged bit for bit, longer prompts,
more chunks and AND sub-prompts scaled to a 7-token prompt's step, on the real ldm UNet and CLIP."""

import pytest
import torch

from tsam_ext.core import length, settings
from tsam_ext.core.guidance import RowTarget, guidance_step
from tsam_ext.core.recorder import Recorder
from tsam_ext.core.schedule import Refinement, refinement_threshold

from test_guidance import setup

# the first n tokens of one tag list, for every length the same kind of words
TAGS = ("masterpiece, best quality, 1girl, solo, long hair, red eyes, black dress, white gloves, holding a sword, "
        "standing in a field of flowers, blue sky, white clouds, sunlight, wind, looking at viewer, smile, a small dog "
        "beside her, a wooden house in the distance, mountains, river, trees, birds, detailed background")


def tags(tokenizer, n: int) -> str:
    ids = tokenizer(TAGS, add_special_tokens=False)["input_ids"]
    text = tokenizer.decode((ids * 3)[:n])
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n
    return text


@pytest.mark.parametrize("loss", ["reference", "paper"])
def test_up_to_seven_tokens_nothing_is_scaled(loss):
    for n in range(0, 8):
        assert length.loss_factor([n], loss) == 1.0
        assert length.threshold([n], loss) == refinement_threshold([n]) or n < length.MIN_TOKENS[loss]
    assert length.loss_factor([8], loss) < 1  # the first length the authors did not run


def test_reference_scaling_is_the_authors_sum_at_every_length():
    for counts in ([75], [75, 75, 30], [3, 3], [7]):
        assert length.loss_factor(counts, "reference", "reference") == 1.0
        assert length.threshold(counts, "reference", "reference") == refinement_threshold(counts)
    with pytest.raises(ValueError):
        length.loss_factor([9], "reference", "other")


def test_long_chunks_weigh_their_row_weight_and_chunks_add_up():
    w7 = length.row_weight(7)
    assert length.row_weight(7) == pytest.approx(sum(0.2 * (i - 1) for i in range(2, 8)))
    assert length.loss_factor([75]) == pytest.approx(w7 / length.row_weight(75))
    # chunks and AND rows of one image: sizes summed, i.e. the mean of the chunks' own scaled losses
    assert length.loss_factor([75, 75]) == pytest.approx(length.loss_factor([75]) / 2)
    assert length.loss_factor([7, 7, 7]) == pytest.approx(1 / 3)
    assert length.loss_factor([3, 3]) == 1.0  # two short chunks weigh less than one 7-token chunk
    assert length.loss_factor([2, 75]) == length.loss_factor([75])  # a chunk without a loss term weighs nothing
    assert length.loss_factor([75], "paper") == pytest.approx(
        (length.paper_row_weight(7) / length.paper_row_weight(75)) ** 0.5)


@pytest.mark.parametrize("loss", ["reference", "paper"])
def test_threshold_of_long_prompts_is_the_seven_token_one_on_the_scaled_loss(loss):
    for counts in ([8], [30], [75], [75, 75], [75, 75, 75]):
        assert length.threshold(counts, loss) == pytest.approx(refinement_threshold([7]))
    # the reference's threshold 0.14 (n - 1) against a loss growing as W(n): long prompts could never count as low
    assert refinement_threshold([75]) / length.row_weight(75) < refinement_threshold([7]) / length.row_weight(7) / 9


@pytest.mark.parametrize("prompt", ["a black car and a white clock", "a red cube", "a dog and a cat"])
@pytest.mark.parametrize("loss", ["reference", "paper"])
def test_reference_prompts_give_bit_identical_steps(small_sd, targets_of, prompt, loss):
    """4-7 tokens (the authors' prompt sets): the same loss, refinement count and latent, bit for bit."""
    z, rows, run_unet, _ = setup(small_sd, targets_of, [prompt])
    out = {scaling: guidance_step(z, rows, run_unet, Recorder(small_sd.unet), 5.0, loss=loss, length=scaling,
                                  refinement=Refinement(iterations=2, extra=1, tolerance=0.0))
           for scaling in length.SCALINGS}
    assert torch.equal(out["normalised"].delta, out["reference"].delta)
    assert out["normalised"].losses == out["reference"].losses and out["normalised"].passes == out["reference"].passes


def test_long_prompt_and_and_rows_are_scaled_by_the_factor(small_sd, targets_of):
    """A 2-chunk prompt, and the same prompt as two AND rows of one image: loss and step times the factor."""
    long = ", ".join(["a small red apple"] * 25)  # 124 tokens: chunks of 75 and 49
    z, rows, run_unet, _ = setup(small_sd, targets_of, [long])
    assert [c.n for c in rows[0].chunks] == [75, 49]
    rows_and = [rows[0], RowTarget(0, rows[0].chunks)]  # AND: a second row of the same image
    cond_and = lambda z_rows, ids: run_unet(z_rows, [0] * len(ids))  # noqa: E731
    for case, run in ((rows, run_unet), (rows_and, cond_and)):
        factor = length.loss_factor([c.n for r in case for c in r.chunks])
        out = {s: guidance_step(z, case, run, Recorder(small_sd.unet), 5.0, length=s) for s in length.SCALINGS}
        assert out["normalised"].losses[0][0] == pytest.approx(factor * out["reference"].losses[0][0], rel=1e-5)
        want = factor * out["reference"].delta  # float32 backward of a scaled loss: equal to rounding
        torch.testing.assert_close(out["normalised"].delta, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert length.loss_factor([75, 49, 75, 49]) == pytest.approx(length.loss_factor([75, 49]) / 2)


def step_sizes(small_sd, targets_of, scaling, lengths, seeds=(0, 1, 2)):
    """Median over seeds of ||delta z|| of one guided step (alpha 5, no refinement) per prompt length."""
    sizes = {}
    for n in lengths:
        z, rows, run_unet, _ = setup(small_sd, targets_of, [tags(small_sd.tokenizer, n)])
        norms = []
        for seed in seeds:
            z = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
            norms.append(float(guidance_step(z, rows, run_unet, Recorder(small_sd.unet), 5.0, length=scaling).delta.norm()))
        sizes[n] = sorted(norms)[len(norms) // 2]
    return sizes


def test_a_step_moves_the_latent_as_far_at_75_tokens_as_at_7(small_sd, targets_of):
    lengths = (7, 15, 30, 75)
    normalised = step_sizes(small_sd, targets_of, "normalised", lengths)
    reference = step_sizes(small_sd, targets_of, "reference", lengths)
    ratio = lambda sizes: {n: sizes[n] / sizes[7] for n in lengths}  # noqa: E731
    # one prompt per length on a 16x16 latent: its own binding varies the step by up to about 2.5x
    # either way (bench/length_table.py takes medians on the pipeline: within 1.5x there)
    assert all(1 / 2.5 <= r <= 2.5 for r in ratio(normalised).values()), (ratio(normalised), ratio(reference))
    assert ratio(reference)[75] > 20, ratio(reference)  # the authors' sum: a 75-token step is dozens of times larger


def test_the_setting_defaults_to_normalised():
    assert settings.Settings().length_scaling == "normalised" == settings.BY_NAME["length_scaling"].default
    assert settings.BY_NAME["length_scaling"].choices == length.SCALINGS
    assert settings.NAMES[-1] == "length_scaling"  # appended: the API's positional order is kept
    with pytest.raises(settings.SettingsError):
        settings.coerce("length_scaling", "normalized")


def test_infotext_round_trip_and_older_images_read_as_reference():
    from tsam_ext.core import infotext

    for scaling in length.SCALINGS:
        chosen = settings.Settings(enabled=True, length_scaling=scaling)
        written = infotext.write(chosen)
        assert written[infotext.KEYS["length_scaling"]] == scaling
        assert infotext.read(written)["length_scaling"] == scaling
    older = infotext.write(settings.Settings(enabled=True))
    del older[infotext.KEYS["length_scaling"]]  # an image T-SAM made before the setting: the authors' sum
    assert infotext.read(older)["length_scaling"] == "reference"
    assert "length_scaling" not in infotext.read({"Steps": "20"})  # without T-SAM: only "off"
