"""T-SAM with Regional Prompter in the A1111 stand-in (tests/a1111/extensions/sd-webui-regional-prompter
mirrors its Script and attn2 hook with the call counter): while Regional Prompter is active T-SAM
says so and makes no UNet call of its own, so Regional Prompter's state and the image are as
without T-SAM; inactive, T-SAM guides as usual."""

import pytest
import torch

import webui as webui_mod
from tsam_ext.core.infotext import TRACE, WARNING

webui_mod.load_extension("sd-webui-regional-prompter")
from sd_webui_regional_prompter import rp  # noqa: E402


def run(webui, settings, tsam):
    runner = webui.runner(extra=(rp.Script,))
    script = next(s for s in runner.scripts if s.title() == "Regional Prompter")
    p, res = webui.generate(tsam=tsam, runner=runner, p_attrs={"regional_prompter": settings}, steps=4, width=64, height=64)
    return script, res


def warning(res):
    text = res.infotexts[0]
    return text.split(f"{WARNING}: ")[1] if f"{WARNING}: " in text else None


@pytest.mark.parametrize("calc", ["Attention", "Latent"])
def test_active_regional_prompter_is_named_and_left_alone(webui, calc):
    counts = []
    for tsam in (dict(enabled=True, refine=False), dict(enabled=False)):
        script, res = run(webui, {"active": True, "calc": calc}, tsam)
        counts.append((script.count, script.pn, script.condi))
        if tsam["enabled"]:
            guided = res
        else:
            alone = res
    assert "Regional Prompter is active" in warning(guided) and calc in warning(guided)
    assert TRACE not in guided.infotexts[0]
    assert counts[0] == counts[1]  # before: T-SAM's truncated passes shifted the call counter
    assert torch.equal(guided.latents[0], alone.latents[0])


def test_inactive_regional_prompter_does_not_stop_guidance(webui):
    _, res = run(webui, {"active": False}, dict(enabled=True, refine=False))
    assert warning(res) is None and TRACE in res.infotexts[0]
