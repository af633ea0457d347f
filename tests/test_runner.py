"""``python -m tsam_ext``: both generations from one seed, the comparison picture, the summary
line, a progress bar for each generation, ``--help``, every ``--arch``, and the defaults (small
on random weights, the family's own with ``--ckpt``)."""

import os

import pytest
from PIL import Image

from tsam_ext.runtime import runner
from tsam_ext.runtime.runner import main


def test_runner_writes_the_comparison(tmp_path, capsys):
    out = tmp_path / "compare.png"
    assert main(["--model-channels", "32", "--size", "64", "--steps", "4", "--no-refine", "--sampler", "Euler",
                 "--prompt", "a red cube on a blue sphere", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "random weights" in printed and "the pictures are noise" in printed
    assert "loss" in printed and str(os.path.abspath(out)) in printed
    assert printed.index("without T-SAM:") < printed.index("with T-SAM:")
    assert captured.err.count("4/4 [") >= 2  # a finished progress bar for each generation
    picture = Image.open(out)
    assert picture.width >= 7 * 128 and picture.height > 3 * 128  # two images, T and S, maps, loss plot


def test_early_stop_flag_reaches_the_refinement(small_sd):
    """alpha 0: the loss never moves, so the early stop fires after 3 + 1 updates; without the flag
    refinement makes the reference's 20 + 10 (the loss is below its threshold), then the step's own."""
    from tsam_ext.runtime.pipeline import generate
    from tsam_ext.runtime.runner import parse_args, settings_from

    passes = {}
    for flags in ([], ["--early-stop"]):
        settings = settings_from(parse_args(flags + ["--alpha", "0", "--guided-steps", "34"]))
        run = generate(small_sd, ["a black car and a white clock"], [1], settings, steps=3, width=64, height=64,
                       sampler="Euler", decode=False, log=lambda _m: None)
        passes[settings.early_stop] = [t.passes for t in run.guided.trace]
    assert passes == {False: [31], True: [4]}


def test_length_scaling_flag_reaches_the_guided_pass(small_sd):
    """A 30-token prompt: the normalised loss is the reference's times the length factor."""
    from tsam_ext.core.length import loss_factor
    from tsam_ext.runtime.pipeline import generate
    from tsam_ext.runtime.runner import parse_args, settings_from

    prompt = "a black car and a white clock, a red apple on a blue plate, a green tree by a yellow house and a dog"
    first = {}
    for scaling in ("reference", "normalised"):
        settings = settings_from(parse_args(["--length-scaling", scaling, "--no-refine", "--guided-steps", "34"]))
        run = generate(small_sd, [prompt], [1], settings, steps=3, width=64, height=64, sampler="Euler", decode=False,
                       log=lambda _m: None)
        assert run.guided.length == scaling
        first[scaling] = run.guided.trace[0].losses[0][0]
    n = [c.n for c in run.rows[0].chunks]
    assert n[0] > 7 and first["normalised"] == pytest.approx(loss_factor(n) * first["reference"], rel=1e-5)
    assert parse_args([]).length_scaling == "normalised"


def test_help_prints_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "60%" in text  # argparse %-formats help: a bare "%" in a help text crashed --help
    assert "--arch {sd1,sd2,sd2-v,sdxl}" in text and "--text-encoder" in text and "--length-scaling" in text


def test_defaults_are_small_on_random_weights_and_the_familys_own_with_a_checkpoint():
    args = runner.parse_args([])
    assert (args.arch, args.model_channels, runner.image_size(args), args.steps) == ("sd1", 128, 256, 20)
    for arch, size in (("sd1", 512), ("sd2", 512), ("sd2-v", 768), ("sdxl", 1024)):
        assert runner.image_size(runner.parse_args(["--arch", arch, "--ckpt", "x.safetensors"])) == size
    assert runner.image_size(runner.parse_args(["--arch", "sdxl", "--size", "384"])) == 384


@pytest.mark.parametrize("arch", ["sd2-v", "sdxl"])
def test_runner_on_sd2_and_sdxl(tmp_path, capsys, arch):
    out = tmp_path / "compare.png"
    assert main(["--arch", arch, "--model-channels", "32", "--text-head-dim", "8", "--size", "64", "--steps", "3",
                 "--no-refine", "--sampler", "Euler", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{arch} with random weights" in printed and "T-SAM: loss" in printed
    assert Image.open(out).width > 2 * 64
