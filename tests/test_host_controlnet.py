"""T-SAM with sd-webui-controlnet in the A1111 stand-in (tests/a1111/extensions/sd-webui-controlnet
mirrors v1.1.455's hook.py, cldm.py, adapter.py and the IP-Adapter hack): the guidance pass is the
UNet call sampling makes, through ControlNet's own forward, with the exact gradient; T-SAM's
extra call leaves ControlNet's state for the sampler's calls as it found it."""

import importlib.util
import types

import pytest
import torch

import webui as webui_mod
from modules import shared
from gradcheck import finite_difference_check
from tsam_ext.core import controller
from tsam_ext.core.infotext import TRACE, WARNING

webui_mod.load_extension("sd-webui-controlnet")
from sd_webui_controlnet import adapter, cldm, controlnet, hook  # noqa: E402
from sd_webui_controlnet.ipadapter import plugable_ipadapter  # noqa: E402

PROMPT = "a black car and a white clock"
SIZE, STEPS = 128, 6


@pytest.fixture(scope="module")
def cn_model(small_sd):
    """Its own checkpoint (ControlNet's hooks stay on a UNet's blocks) and the units' models."""
    sd_model = webui_mod.make_sd_model(small_sd)
    unet = sd_model.model.diffusion_model
    mc = unet.model_channels
    inner = [m.to_q.out_features for name, m in unet.named_modules() if name.endswith("attn2")]
    return types.SimpleNamespace(
        sd_model=sd_model,
        controlnet=cldm.PlugableControlModel(cldm.ControlNet(unet)),
        adapter=adapter.PlugableAdapter(adapter.Adapter((mc, 2 * mc, 4 * mc, 4 * mc))),
        ip_adapter=plugable_ipadapter.PlugableIPAdapter(768, inner))


@pytest.fixture
def cn(webui, cn_model, on_model):
    on_model(cn_model.sd_model)
    cn_model.adapter.reset()
    return cn_model


def hint(batch=1, channels=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, SIZE, SIZE, generator=g)


def unit(cn, kind, **kw):
    if kind == "reference_only":
        return dict(model=None, module="reference_only", hint=hint(), threshold_a=0.5) | kw
    if kind == "inpaint_only":
        img = hint(channels=4)
        img[:, 3] = (torch.arange(SIZE)[None, :] >= SIZE // 2).float()
        return dict(model=cn.controlnet, module="inpaint_only", hint=img) | kw
    model = {"controlnet": cn.controlnet, "t2i": cn.adapter, "ip_adapter": cn.ip_adapter}[kind]
    return dict(model=model, module="none", hint=hint()) | kw


def run(webui, cn, units, tsam=None, batch_size=1, prompt=PROMPT, **kwargs):
    runner = webui.runner(extra=(controlnet.Script,))
    settings = dict(enabled=True, refine=False) | (tsam or {})
    p, res = webui.generate(tsam=settings, runner=runner, p_attrs={"controlnet_units": units}, prompt=prompt,
                            batch_size=batch_size, seed=3, steps=STEPS, width=SIZE, height=SIZE, sampler_name="Euler", **kwargs)
    return p, res


def infotext_value(res, key):
    text = res.infotexts[0]
    return text.split(f"{key}: ")[1].split(",")[0] if f"{key}: " in text else None


UNITS = {
    "controlnet": lambda cn: [unit(cn, "controlnet")],
    "soft injection": lambda cn: [unit(cn, "controlnet", soft_injection=True, weight=0.8)],
    "ControlNet is more important": lambda cn: [unit(cn, "controlnet", cfg_injection=True)],
    "T2I-Adapter": lambda cn: [unit(cn, "t2i")],
    "IP-Adapter": lambda cn: [unit(cn, "ip_adapter")],
    "two units": lambda cn: [unit(cn, "controlnet", weight=0.6), unit(cn, "ip_adapter", weight=0.5)],
}


@pytest.mark.parametrize("kind", list(UNITS))
def test_guidance_gradient_through_controlnet_is_exact(webui, cn, monkeypatch, kind):
    """Against a central difference of the loss of the same composed function (UNet and units):
    before, ControlNet's no_grad encoder (and the IP-Adapter's no_grad hack) left it partial."""
    real, checks = controller.guidance_step, []

    def checking(z, rows, run_unet, recorder, alpha, **kw):
        out = real(z, rows, run_unet, recorder, alpha, **kw)
        if not checks and out.losses:
            with recorder.fused():
                checks.extend(finite_difference_check(z.float(), rows, run_unet, recorder, -out.delta / alpha))
        return out

    monkeypatch.setattr(controller, "guidance_step", checking)
    _, res = run(webui, cn, UNITS[kind](cn))
    assert infotext_value(res, WARNING) is None and infotext_value(res, TRACE)
    for analytic, numeric in checks:
        assert analytic == pytest.approx(numeric, rel=0.02, abs=1e-6)
    assert len(checks) == 2


CASES = {
    "controlnet": lambda cn: [unit(cn, "controlnet")],
    "starts at 30%": lambda cn: [unit(cn, "controlnet", start=0.3)],
    "reference_only": lambda cn: [unit(cn, "reference_only")],
    "T2I-Adapter": lambda cn: [unit(cn, "t2i")],
    "IP-Adapter": lambda cn: [unit(cn, "ip_adapter")],
    "inpaint_only": lambda cn: [unit(cn, "inpaint_only")],
    "reference_only + IP-Adapter": lambda cn: [unit(cn, "reference_only"), unit(cn, "ip_adapter")],
}


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_tsam_pass_leaves_controlnet_as_it_found_it(webui, cn, case, batch_size):
    """Alpha 0 runs every guidance pass and moves nothing: the image must be ControlNet's alone, bit
    for bit, at batch 1 and 2 (before: reference_only / inpaint_only caches sized by T-SAM's rows
    lost the generation, the IP-Adapter's k/v cache kept T-SAM's batch, the reference noise came
    from the sampler's random stream, and a unit inactive at a step cut the gradient)."""
    prompts = [PROMPT, "a dog chasing a red ball"][:batch_size]
    _, alone = run(webui, cn, CASES[case](cn), tsam=dict(enabled=False), batch_size=batch_size, prompt=prompts)
    _, zero = run(webui, cn, CASES[case](cn), tsam=dict(alpha=0.0), batch_size=batch_size, prompt=prompts)
    assert infotext_value(zero, WARNING) is None and infotext_value(zero, TRACE)
    for a, b in zip(alone.latents, zero.latents):
        assert torch.equal(a, b)
    _, guided = run(webui, cn, CASES[case](cn), batch_size=batch_size, prompt=prompts)
    assert infotext_value(guided, WARNING) is None
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(alone.latents, guided.latents))


def test_pass_applies_the_units_sampling_applies_at_that_step(webui, cn):
    """A unit from 30%: ControlNet's per-step window is set in an on_cfg_denoiser callback that
    runs after T-SAM's pass; the pass at step k must see step k's window, not step k-1's."""
    start, calls = 0.3, []
    handle = cn.controlnet.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["x"].shape[0]), with_kwargs=True)
    try:
        _, res = run(webui, cn, [unit(cn, "controlnet", start=start)])
    finally:
        handle.remove()
    assert infotext_value(res, WARNING) is None
    # the callback's step is the sampler's last finished one (state.sampling_step): 0, 0, 1, 2, ...
    active = [max(k - 1, 0) / STEPS >= start for k in range(STEPS)]
    assert calls.count(2) == sum(active)                     # sampling's calls: cond + uncond rows
    tsam = [i for i, rows in enumerate(calls) if rows == 1]  # T-SAM's: its one row, just before sampling's
    assert len(tsam) == sum(active[:4]) > 0 and all(calls[i + 1] == 2 for i in tsam)  # 4 of 6 steps guided


def test_cond_marks_are_read_as_the_prompt(webui, cn):
    """ControlNet marks each cond with an extra token row; a unit of weight 0 adds nothing, so the
    pass's loss must be the one without ControlNet (the maps read the prompt's own tokens)."""
    _, with_cn = run(webui, cn, [unit(cn, "controlnet", weight=0.0)])
    _, without = run(webui, cn, [])
    assert infotext_value(with_cn, TRACE) == infotext_value(without, TRACE)


def test_the_guidance_pass_is_the_sampling_call(webui, cn):
    """The UNet's input in T-SAM's pass is the cond row of sampling's own call at that step."""
    unet = cn.sd_model.model.diffusion_model
    inputs = []
    handle = unet.register_forward_pre_hook(lambda m, args, kw: inputs.append((args[0] if args else kw["x"]).detach().clone()),
                                            with_kwargs=True)
    try:
        run(webui, cn, [unit(cn, "controlnet")], tsam=dict(alpha=0.0))
    finally:
        handle.remove()
    guided = [i for i, x in enumerate(inputs) if x.shape[0] == 1]
    assert len(guided) == 4
    for i in guided:
        torch.testing.assert_close(inputs[i][0], inputs[i + 1][0], rtol=0, atol=1e-6)


def test_an_extension_that_cuts_the_gradient_is_named(webui, cn, tmp_path):
    """An extension whose UNet forward runs without gradients: T-SAM says which, and generates."""
    folder = tmp_path / "extensions" / "sd-webui-blocker" / "scripts"
    folder.mkdir(parents=True)
    (folder / "blocker.py").write_text(
        "import torch\n\n"
        "def install(unet):\n"
        "    original = unet.forward\n"
        "    def forward(*args, **kwargs):\n"
        "        with torch.no_grad():\n"
        "            return original(*args, **kwargs)\n"
        "    unet.forward = forward\n")
    spec = importlib.util.spec_from_file_location("blocker", folder / "blocker.py")
    blocker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blocker)
    unet = shared.sd_model.model.diffusion_model
    blocker.install(unet)
    try:
        _, res = run(webui, cn, [])
    finally:
        del unet.forward
    warning = infotext_value(res, WARNING) or ""
    assert res.latents and "sd-webui-blocker replaces the forward of UNet" in res.infotexts[0]
    assert "does not depend on the latent" in res.infotexts[0], warning
