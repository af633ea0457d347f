"""``python -m tsam_ext``: both generations from one seed, the comparison picture, the summary line."""

import os

from PIL import Image

from tsam_ext.runtime.runner import main


def test_runner_writes_the_comparison(tmp_path, capsys):
    out = tmp_path / "compare.png"
    assert main(["--model-channels", "32", "--size", "64", "--steps", "4", "--no-refine", "--sampler", "Euler",
                 "--prompt", "a red cube on a blue sphere", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random weights" in printed and "the pictures are noise" in printed
    assert "loss" in printed and str(os.path.abspath(out)) in printed
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
