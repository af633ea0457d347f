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
