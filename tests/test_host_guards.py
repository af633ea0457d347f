"""Nothing in T-SAM aborts a generation: an exception raised at any point where the WebUI calls
into T-SAM (the Script's hooks, the sampler function wrapper, the sampler's step callback, the
CFG denoiser) becomes a warning in the console and in the image's parameters (or, once the
images exist, under them), and the image is still produced; the WebUI's own error report (for
an extension whose hook raised) is never reached."""

import pytest
import torch

from modules import errors
from modules.infotext_utils import parse_generation_parameters
from tsam_ext.core import controller, infotext
from tsam_ext.host import job as host_job
from tsam_ext.host.a1111 import sampling as host_sampling

GENERATION = dict(prompt="a black car and a white clock", seed=2, steps=6, width=64, height=64, sampler_name="Euler")


def fail(*_args, **_kwargs):
    raise RuntimeError("injected failure")


# (object, attribute, where the message lands, whether guidance ran before the failure)
POINTS = {
    "Script.process (job.start)": (infotext, "write", infotext.ERROR, False),
    "Script.process_before_every_sampling (install)": (host_sampling.SamplingPass, "install", infotext.WARNING, False),
    "sampler function wrapper, start of the pass": (host_sampling.SamplingPass, "start", infotext.WARNING, False),
    "sampler function wrapper, end of the pass": (host_job.Job, "end_pass", infotext.WARNING, True),
    "sampler step callback (end_step)": (controller.GuidedPass, "end_step", infotext.WARNING, True),
    "CFG denoiser forward (guidance)": (controller.GuidedPass, "begin_call", infotext.WARNING, False),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_an_exception_becomes_a_warning_and_the_image_is_produced(webui, monkeypatch, capsys, point):
    target, attribute, key, guided = POINTS[point]
    _, plain = webui.generate(tsam=dict(enabled=False), **GENERATION)
    monkeypatch.setattr(target, attribute, fail)
    reported = len(errors.reported)
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), **GENERATION)
    assert len(res.latents) == 1 and torch.isfinite(res.latents[0]).all()
    assert len(errors.reported) == reported, "T-SAM's own guard, not the WebUI's error report"
    params = parse_generation_parameters(res.infotexts[0])
    assert "injected failure" in params[key], params
    assert "injected failure" in capsys.readouterr().out
    if not guided:
        assert torch.equal(res.latents[0], plain.latents[0])
    if key == infotext.ERROR:  # nothing of T-SAM's settings is claimed for an unguided image
        assert infotext.MARKER not in params


def test_an_exception_after_the_images_exist_is_said_under_them(webui, monkeypatch, capsys):
    monkeypatch.setattr(host_job, "add_diagnostics", fail)
    reported = len(errors.reported)
    _, res = webui.generate(tsam=dict(enabled=True, refine=False, diagnostics=True), **GENERATION)
    assert len(res.images) == 1 and len(errors.reported) == reported
    assert "T-SAM: RuntimeError at the end of the generation: injected failure" in res.comments
    assert "injected failure" in capsys.readouterr().out
