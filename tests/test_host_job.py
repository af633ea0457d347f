"""A generation with T-SAM in the WebUI stand-in: off is bit-identical and hook-free; bad input,
unsupported setups, out-of-memory, NaN and interrupts all still give an image, with a message."""

import pytest
import torch

import webui as w
from k_diffusion import sampling
from modules import errors, processing, scripts, sd_hijack_optimizations, sd_unet, shared
from tsam_ext.core import controller, guidance, infotext
from tsam_ext.core.guidance import OUT_OF_MEMORY
from tsam_ext.core.recorder import Recorder

REAL_GUIDE = controller.GuidedPass.guide


def spy_steps(monkeypatch):
    steps = []

    def spy(self, x, step, *args):
        steps.append((step, self.plan.steps))
        return REAL_GUIDE(self, x, step, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    return steps


def params(infotext_line):
    from modules.infotext_utils import parse_generation_parameters
    return parse_generation_parameters(infotext_line)


def test_disabled_is_bit_identical_to_not_installed_and_installs_nothing(webui):
    _, with_ext = webui.generate(tsam=dict(enabled=False), sampler_name="DPM++ 2M")
    bare = scripts.ScriptRunner([], is_img2img=False)
    p = processing.StableDiffusionProcessingTxt2Img(script_args=[0], scripts_runner=bare, prompt="a black car and a white clock",
                                                    seed=1, steps=6, width=128, height=128, sampler_name="DPM++ 2M")
    w.reset_state()
    without = processing.process_images(p)
    assert torch.equal(with_ext.latents[0], without.latents[0])
    assert with_ext.infotexts == without.infotexts

    seen = []

    class Watch(scripts.Script):  # runs after T-SAM's hook: sees what it installed on this pass's sampler
        def title(self):
            return "watch"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            seen.append((p.sampler.func is sampling.sample_euler, "forward" in vars(p.sampler.model_wrap_cfg)))

    runner = scripts.ScriptRunner([webui.module.Script, Watch])
    import gradio as gr
    with gr.Blocks():
        runner.setup_ui()
    for enabled in (False, True):
        args = runner.default_args()
        args[1] = enabled
        p = processing.StableDiffusionProcessingTxt2Img(script_args=args, scripts_runner=runner, prompt="a red cube on a blue box",
                                                        seed=1, steps=3, width=64, height=64, sampler_name="Euler")
        processing.process_images(p)
        assert p.sampler.func is sampling.sample_euler and "forward" not in vars(p.sampler.model_wrap_cfg)  # removed after
    assert seen == [(True, False), (False, True)]  # off: nothing; on: wrappers on this pass's sampler only


def test_infotext_has_every_setting_and_the_loss_trace(webui):
    _, res = webui.generate(tsam=dict(enabled=True, gamma=2.5, alpha=7, guided_steps=50, refine=False, loss="paper"))
    got = params(res.infotexts[0])
    assert got["T-SAM gamma"] == "2.5" and got["T-SAM alpha"] == "7" and got["T-SAM guided steps"] == "50%"
    assert got["T-SAM refinement"] == "off" and got["T-SAM loss"] == "paper"
    first, last = (float(v) for v in got["T-SAM loss trace"].split(" -> "))
    assert first > 0 and last > 0


def test_hires_pass_is_guided_only_when_asked(webui, monkeypatch):
    steps = spy_steps(monkeypatch)
    hires = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5, steps=5)
    webui.generate(tsam=dict(enabled=True, refine=False), **hires)
    assert {n for _, n in steps} == {5}
    steps.clear()
    _, res = webui.generate(tsam=dict(enabled=True, refine=False, hires=True), **hires)
    # hires: 4 steps at strength 0.5 -> int(4 / 0.5) = 8 scheduled, t_enc = 3: 4 run; 60% of 4 = 2 guided
    assert [s for s in steps if s[1] == 4] == [(0, 4), (1, 4)] and len([s for s in steps if s[1] == 5]) == 3
    assert "(hires)" in params(res.infotexts[0])["T-SAM loss trace"]


def test_img2img_counts_the_steps_actually_run(webui, monkeypatch):
    steps = spy_steps(monkeypatch)
    init = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    webui.generate(tsam=dict(enabled=True, refine=False), img2img=True, init_latent=init, denoising_strength=0.5, steps=10)
    # int(0.5 * 10) = 5 -> 6 steps run; 60% of 6 = 4 guided
    assert steps == [(0, 6), (1, 6), (2, 6), (3, 6)]


@pytest.mark.parametrize("args,message", [
    ({"enabled": True, "gamma": "hot"}, "gamma must be a number"),
    ({"enabled": True, "alpha": 400}, "alpha must be between 0 and 40"),
    ({"enabled": True, "loss": "mse"}, "loss must be one of reference, paper"),
    ({"enabled": True, "strength": 2}, "unknown T-SAM parameter 'strength'"),
    ({"enabled": True, "guided_steps": 12.5}, "guided_steps must be a whole number"),
])
def test_bad_api_values_give_a_message_and_an_unguided_image(webui, args, message):
    runner = webui.txt2img
    raw = runner.default_args()
    raw[runner.scripts[0].args_from] = args
    _, res = webui.generate(raw_args=raw)
    _, plain = webui.generate(tsam=dict(enabled=False))
    got = params(res.infotexts[0])
    assert message in got["T-SAM error"] and "without T-SAM" in got["T-SAM error"]
    assert message in res.comments
    assert torch.equal(res.latents[0], plain.latents[0])


def test_bad_values_while_disabled_are_ignored(webui):
    runner = webui.txt2img
    raw = runner.default_args()
    raw[runner.scripts[0].args_from + 1] = "hot"
    _, res = webui.generate(raw_args=raw)
    assert "T-SAM error" not in res.infotexts[0]


def test_dict_argument_drives_the_script(webui):
    runner = webui.txt2img
    raw = runner.default_args()
    raw[runner.scripts[0].args_from] = {"enabled": True, "alpha": 9, "refine": False}
    _, res = webui.generate(raw_args=raw)
    assert params(res.infotexts[0])["T-SAM alpha"] == "9"


@pytest.mark.parametrize("setup,reason", [
    (lambda m: setattr(m, "is_sd3", True), "SD3 is a diffusion transformer"),
    (lambda m: setattr(shared.cmd_opts, "lowvram", True), "--lowvram"),
])
def test_unsupported_setups_are_refused_with_a_reason(webui, setup, reason):
    model = shared.sd_model
    try:
        setup(model)
        _, res = webui.generate(tsam=dict(enabled=True))
    finally:
        model.is_sd1, model.is_sdxl, model.is_sd3 = True, False, False
        shared.cmd_opts.lowvram = False
    assert reason in params(res.infotexts[0])["T-SAM error"]


class TensorRT(sd_unet.SdUnetOption):
    label, model_name = "[TRT] random-sd15", "random-sd15"

    def create_unet(self):
        return sd_unet.SdUnet()


@pytest.fixture
def tensorrt():
    sd_unet.unet_options.append(TensorRT())
    yield
    sd_unet.unet_options.clear()
    sd_unet.apply_unet("None")
    shared.opts.sd_unet = "Automatic"


def test_the_alternative_unet_refusal_reads_the_unet_that_will_sample(webui, tensorrt):
    """A1111 makes the "SD Unet" choice current after the scripts' ``process``: the refusal reads
    that choice, not the UNet of the previous generation (before: one generation out of date)."""
    shared.opts.sd_unet = TensorRT.label
    _, first = webui.generate(tsam=dict(enabled=True, refine=False), steps=2)
    assert sd_unet.current_unet is not None and "[TRT] random-sd15" in params(first.infotexts[0])["T-SAM error"]
    shared.opts.sd_unet = "None"  # still current until processing applies the choice
    _, second = webui.generate(tsam=dict(enabled=True, refine=False), steps=2)
    assert "T-SAM error" not in params(second.infotexts[0]) and "T-SAM loss trace" in params(second.infotexts[0])
    assert sd_unet.current_unet is None


def test_out_of_memory_during_guidance_still_gives_an_image(webui, monkeypatch):
    real = shared.sd_model.apply_model

    def tight(x, t, cond, **kw):
        if torch.is_grad_enabled():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(x, t, cond, **kw)

    monkeypatch.setattr(shared.sd_model, "apply_model", tight)
    _, res = webui.generate(tsam=dict(enabled=True), prompt=["a black car and a white clock"] * 2, batch_size=2)
    got = params(res.infotexts[0])
    assert len(res.latents) == 2 and all(torch.isfinite(i).all() for i in res.latents)
    assert OUT_OF_MEMORY in got["T-SAM warning"] and "T-SAM error" not in got


def test_out_of_memory_on_a_batch_falls_back_to_smaller_passes(webui, monkeypatch):
    real, sizes = shared.sd_model.apply_model, []

    def tight(x, t, cond, **kw):
        if torch.is_grad_enabled():
            sizes.append(x.shape[0])
            if x.shape[0] > 1:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x, t, cond, **kw)

    monkeypatch.setattr(shared.sd_model, "apply_model", tight)
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), prompt=["a black car and a white clock", "a dog on a red mat"],
                            batch_size=2)
    # plain, then checkpointed, then halved: remembered for the rest of the pass
    assert sizes[:4] == [2, 2, 1, 1] and set(sizes[4:]) == {1}
    warning = params(res.infotexts[0])["T-SAM warning"]
    assert "activation checkpointing" in warning and "1 image(s) per pass" in warning and "skipped" not in warning


def test_non_finite_loss_skips_the_step_and_keeps_the_image(webui, monkeypatch):
    real = guidance.row_losses
    monkeypatch.setattr(guidance, "row_losses", lambda *a, **k: real(*a, **k) * float("nan"))
    _, res = webui.generate(tsam=dict(enabled=True, refine=False))
    _, plain = webui.generate(tsam=dict(enabled=False))
    assert "not finite" in params(res.infotexts[0])["T-SAM warning"]
    assert torch.equal(res.latents[0], plain.latents[0])


def test_interrupt_during_guidance_stops_at_once_and_returns_the_last_latent(webui, monkeypatch):
    passes = []
    real = guidance._loss_and_grad

    def counting(*args, **kwargs):
        passes.append(1)
        if len(passes) == 3:
            shared.state.interrupted = True
        return real(*args, **kwargs)

    monkeypatch.setattr(guidance, "_loss_and_grad", counting)
    _, res = webui.generate(tsam=dict(enabled=True, refine=True))
    assert len(passes) == 3  # refinement wanted 21 passes at step 1: it stopped at once
    assert len(res.latents) == 1 and torch.isfinite(res.latents[0]).all()


def test_chains_with_another_extensions_denoiser_wrapper(webui):
    calls = []

    class Other(scripts.Script):
        def title(self):
            return "other"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            denoiser, inner = p.sampler.model_wrap_cfg, p.sampler.model_wrap_cfg.forward

            def forward(*a, **k):
                calls.append(1)
                return inner(*a, **k)
            denoiser.forward = forward

    runner = scripts.ScriptRunner([Other, webui.module.Script])
    import gradio as gr
    with gr.Blocks():
        runner.setup_ui()
    args = runner.default_args()
    args[1] = True
    p = processing.StableDiffusionProcessingTxt2Img(script_args=args, scripts_runner=runner, prompt="a red cube on a blue box",
                                                    seed=1, steps=4, width=64, height=64, sampler_name="Euler")
    res = processing.process_images(p)
    assert len(calls) == 4, "the other extension's forward ran for every model call"
    assert "T-SAM loss trace" in res.infotexts[0] and "T-SAM warning" not in res.infotexts[0]


@pytest.mark.parametrize("optimizer", list(sd_hijack_optimizations.OPTIMIZERS))
def test_recording_under_every_attention_optimizer(webui, optimizer):
    """Whatever kernel the WebUI installed, the maps and the gradient are the same; outputs unchanged."""
    unet = shared.sd_model.model.diffusion_model
    cond, x, t = torch.randn(1, 77, 768), torch.randn(1, 4, 16, 16), torch.tensor([600.0])

    def maps_and_grad():
        leaf = x.clone().requires_grad_(True)
        with torch.enable_grad():
            maps = Recorder(unet).run(lambda: unet(leaf, t, context=cond), (16, 16))
            g, = torch.autograd.grad(maps[..., 1:6].pow(2).sum(), leaf)
        return maps.detach(), g

    try:
        sd_hijack_optimizations.apply("None")
        ref_maps, ref_grad = maps_and_grad()
        with torch.no_grad():
            ref_out = unet(x, t, context=cond)
        sd_hijack_optimizations.apply(optimizer)
        maps, grad = maps_and_grad()
        with torch.no_grad():
            out = unet(x, t, context=cond)
            with Recorder(unet).record((16, 16), truncate=False):
                hooked = unet(x, t, context=cond)
    finally:
        sd_hijack_optimizations.undo()
    torch.testing.assert_close(maps, ref_maps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(out, ref_out, atol=1e-4, rtol=1e-4)
    assert torch.equal(hooked, out)


def test_errors_inside_a_guided_step_never_abort_the_generation(webui, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("unexpected")
    monkeypatch.setattr(controller, "guidance_step", broken)
    n = len(errors.reported)
    _, res = webui.generate(tsam=dict(enabled=True))
    assert len(res.latents) == 1 and "unexpected" in params(res.infotexts[0])["T-SAM warning"]
    assert len(errors.reported) == n
    assert infotext.TRACE not in params(res.infotexts[0])


@pytest.mark.parametrize("prompt", ["", "cat", "a cat"])
def test_too_short_prompts_say_so_and_give_the_normal_image(webui, prompt):
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), prompt=prompt, steps=4)
    _, plain = webui.generate(tsam=dict(enabled=False), prompt=prompt, steps=4)
    warning = params(res.infotexts[0])["T-SAM warning"]
    assert warning.startswith("image 1: prompt has fewer than 3 tokens") and "not guided" in warning
    assert warning.count("image 1") == 1
    assert torch.equal(res.latents[0], plain.latents[0])


def test_images_per_guidance_pass_setting_is_honoured(webui, monkeypatch):
    real, sizes = shared.sd_model.apply_model, []

    def counting(x, t, cond, **kw):
        if torch.is_grad_enabled():
            sizes.append(x.shape[0])
        return real(x, t, cond, **kw)

    monkeypatch.setattr(shared.sd_model, "apply_model", counting)
    shared.opts.tsam_max_batch = 1
    try:
        webui.generate(tsam=dict(enabled=True, refine=False), prompt=["a black car and a white clock", "a dog on a red mat"],
                       batch_size=2, steps=3)
    finally:
        del shared.opts.data["tsam_max_batch"]
    assert sizes and set(sizes) == {1}
    sizes.clear()
    webui.generate(tsam=dict(enabled=True, refine=False), prompt=["a black car and a white clock", "a dog on a red mat"],
                   batch_size=2, steps=3)
    assert set(sizes) == {2}


def test_text_targets_follow_a_checkpoint_switch(webui):
    from tsam_ext.host.job import Job
    from tsam_ext.core.settings import Settings

    job = Job(processing.StableDiffusionProcessingTxt2Img(), Settings(enabled=True))
    model = shared.sd_model
    first = job.texts_for(model)
    assert job.texts_for(model) is first
    model.sd_model_hash = "another"  # weights swapped into the same object
    try:
        assert job.texts_for(model) is not first
    finally:
        model.sd_model_hash = "b833ab4e10"


def test_a_forward_called_in_an_unexpected_way_still_samples(webui, monkeypatch):
    """Another extension calling the denoiser with arguments T-SAM cannot read: no guidance, an image."""
    from tsam_ext.host import sampling_pass

    class Unreadable:
        def bind(self, *args, **kwargs):
            raise TypeError("missing a required argument: 'cond'")

    monkeypatch.setattr(sampling_pass, "FORWARD", Unreadable())
    _, res = webui.generate(tsam=dict(enabled=True, refine=False), steps=3)
    assert len(res.latents) == 1 and "missing a required argument" in params(res.infotexts[0])["T-SAM warning"]
