"""T-SAM in the Forge stand-in: chosen as the Forge backend, off is bit-identical and hook-free, the
guidance pass gets its gradient through Forge's inference-mode weights and in-place transformer
blocks (and fails the way real Forge fails without each fix), and nothing it did is left behind
for Forge's own sampling, LoRA switching or a checkpoint switch."""

import importlib
from contextlib import nullcontext

import k_diffusion.sampling
import pytest
import torch

from tsam_ext.core import controller, guidance

REAL_GUIDE = controller.GuidedPass.guide


def host(name):
    """A module as the running (Forge stand-in) process has it."""
    return importlib.import_module(name)


def params(line):
    return host("modules.infotext_utils").parse_generation_parameters(line)


def weights(model):
    unet = model.forge_objects.unet.model.diffusion_model
    return {name: p for name, p in unet.named_parameters()}


def spy_steps(monkeypatch):
    steps = []

    def spy(self, x, step, *args):
        steps.append((step, self.plan.steps))
        return REAL_GUIDE(self, x, step, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    return steps


def test_the_forge_backend_is_the_one_chosen(forge):
    backend = host("tsam_ext.host.backend")
    assert backend.running_forge() and backend.NAME == "forge"
    assert backend.current is host("tsam_ext.host.forge")


def test_disabled_is_bit_identical_to_not_installed_and_installs_nothing(forge):
    _, off = forge.generate(tsam=dict(enabled=False), sampler_name="DPM++ 2M")
    _, absent = forge.bare(sampler_name="DPM++ 2M")
    assert torch.equal(off.latents[0], absent.latents[0]) and off.infotexts == absent.infotexts
    scripts = host("modules.scripts")
    seen = []

    class Watch(scripts.Script):  # runs after T-SAM's hook: sees what it installed
        def title(self):
            return "watch"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            seen.append("forward" in vars(p.sampler.model_wrap_cfg))

    runner = scripts.ScriptRunner([forge.module.Script, Watch])
    import gradio as gr
    with gr.Blocks():
        runner.setup_ui()
    for enabled in (False, True):
        args = runner.default_args()
        args[1] = enabled
        p, _ = forge.generate(runner=runner, raw_args=args, steps=3, width=64, height=64)
        assert "forward" not in vars(p.sampler.model_wrap_cfg) and p.sampler.func is k_diffusion.sampling.sample_euler
    assert seen == [False, True]


def test_guidance_runs_inside_forges_inference_mode(forge):
    p, res = forge.generate(tsam=dict(enabled=True, refine=False))
    _, plain = forge.bare()
    got = params(res.infotexts[0])
    first, last = (float(v) for v in got["T-SAM loss trace"].split(" -> "))
    assert "T-SAM warning" not in got and first > 0 and last > 0
    assert (res.latents[0] - plain.latents[0]).abs().max() > 1e-3
    assert all(w.is_inference() for w in weights(forge.model).values())  # as Forge loaded them


@pytest.mark.parametrize("missing,error", [
    ("normal_weights", "inference tensor"),  # Forge's Parameters are inference tensors (that require grad)
    ("cloned_layernorm_inputs", "modified by an inplace operation"),
])
def test_without_each_autograd_fix_guidance_fails_as_in_real_forge_and_the_image_is_kept(forge, monkeypatch, missing, error):
    autograd = host("tsam_ext.host.forge.autograd")
    monkeypatch.setattr(autograd, missing, lambda module: nullcontext())
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), steps=3, width=64, height=64)
    _, plain = forge.bare(steps=3, width=64, height=64)
    assert error in params(res.infotexts[0])["T-SAM warning"].lower()
    assert torch.equal(res.latents[0], plain.latents[0])


def test_nothing_stays_changed_after_a_guided_generation(forge):
    model = forge.model
    before = weights(model)
    forge.generate(tsam=dict(enabled=True, refine=False), steps=3, width=64, height=64)
    assert forge.model is model
    after = weights(model)
    assert all(after[k] is before[k] and after[k].is_inference() for k in before), "every Forge weight is back"
    unet = model.forge_objects.unet.model.diffusion_model
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules()), "no hook left"
    _, off = forge.generate(tsam=dict(enabled=False), steps=3, width=64, height=64)
    _, absent = forge.bare(steps=3, width=64, height=64)
    assert torch.equal(off.latents[0], absent.latents[0])


def test_lora_switch_and_checkpoint_switch_around_guided_generations(forge, small_sd):
    lora = host("sd_forge_lora")
    key = "diffusion_model.input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"
    shape = weights(forge.model)[key[len("diffusion_model."):]].shape
    g = torch.Generator().manual_seed(1)
    lora.available_networks.update(a={key: torch.randn(shape, generator=g) * 0.2}, b={key: torch.randn(shape, generator=g) * 0.2})
    small = dict(steps=3, width=64, height=64)
    try:
        _, absent_a = forge.bare(prompt="a black car and a white clock <lora:a:1>", **small)
        _, plain = forge.bare(**small)
        assert not torch.equal(absent_a.latents[0], plain.latents[0]), "the LoRA changes the image"
        _, on_a = forge.generate(tsam=dict(enabled=True, refine=False), prompt="a black car and a white clock <lora:a:1>", **small)
        _, on_b = forge.generate(tsam=dict(enabled=True, refine=False), prompt="a black car and a white clock <lora:b:0.8>", **small)
        assert "T-SAM warning" not in on_a.infotexts[0] + on_b.infotexts[0]
        first = forge.model
        forge.load("random-sd15-b", small_sd)
        _, on_ckpt = forge.generate(tsam=dict(enabled=True, refine=False), prompt="a black car and a white clock <lora:b:0.8>", **small)
        assert forge.model is not first and "T-SAM loss trace" in on_ckpt.infotexts[0]
        for prompt in ("a black car and a white clock <lora:b:0.8>", "a black car and a white clock <lora:a:1>",
                       "a black car and a white clock"):
            _, off = forge.generate(tsam=dict(enabled=False), prompt=prompt, **small)
            _, absent = forge.bare(prompt=prompt, **small)
            assert torch.equal(off.latents[0], absent.latents[0]), prompt
        assert torch.equal(absent.latents[0], plain.latents[0]), "LoRA fully removed"
        _, again_a = forge.bare(prompt="a black car and a white clock <lora:a:1>", **small)
        assert torch.equal(again_a.latents[0], absent_a.latents[0]), "LoRA A merges as before"
    finally:
        lora.available_networks.clear()
        forge.load("random-sd15", small_sd)


def test_hires_calls_the_hook_twice_but_each_step_is_guided_once(forge, monkeypatch):
    steps = spy_steps(monkeypatch)
    hires = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5, steps=5, width=128, height=128)
    _, res = forge.generate(tsam=dict(enabled=True, refine=False, hires=True), **hires)
    # first pass: 60% of 5 = 3; hires: int(4 / 0.5) = 8 scheduled, 4 run: 60% of 4 = 2 (at Forge's API default hr_cfg 1.0)
    assert steps == [(0, 5), (1, 5), (2, 5), (0, 4), (1, 4)]
    assert "(hires)" in params(res.infotexts[0])["T-SAM loss trace"]
    steps.clear()
    forge.generate(tsam=dict(enabled=True, refine=False), **hires)
    assert steps == [(0, 5), (1, 5), (2, 5)]


def test_the_step_reads_the_cond_rows_whatever_the_batch_order_and_cfg(forge, monkeypatch):
    """Forge batches [uncond, cond] and drops uncond at CFG 1: the first guided step, made on the
    same noise, must not depend on the negative prompt or the CFG scale."""
    deltas, real = [], guidance.guidance_step

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        deltas.append(out.delta.clone())
        return out

    monkeypatch.setattr(controller, "guidance_step", record)
    small = dict(steps=3, width=64, height=64, tsam=dict(enabled=True, refine=False, guided_steps=30))
    forge.generate(negative_prompt="", **small)
    forge.generate(negative_prompt="a blue dog on a green field", **small)
    forge.generate(negative_prompt="", cfg_scale=1.0, **small)
    assert len(deltas) == 3 and deltas[0].abs().max() > 0
    torch.testing.assert_close(deltas[1], deltas[0])
    torch.testing.assert_close(deltas[2], deltas[0])


def test_img2img_counts_the_steps_actually_run(forge, monkeypatch):
    steps = spy_steps(monkeypatch)
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    forge.generate(tsam=dict(enabled=True, refine=False), img2img=True, init_latent=init, denoising_strength=0.5, steps=10,
                   width=64, height=64)
    assert steps == [(0, 6), (1, 6), (2, 6), (3, 6)]  # int(0.5 * 10) = 5 -> 6 steps run; 60% of 6 = 4


def test_models_without_unet_cross_attention_are_refused_plainly(forge):
    job = host("tsam_ext.host.job")
    for engine in (host("backend.diffusion_engine.flux").Flux(), host("backend.diffusion_engine.chroma").Chroma()):
        name = type(engine).__name__
        assert job.unsupported_model(engine).startswith(f"{name} is a diffusion transformer without the UNet cross-attention")
    flux = host("backend.diffusion_engine.flux").Flux()
    flux.is_sd3 = True
    assert job.unsupported_model(flux).startswith("SD3 is a diffusion transformer")
    model = forge.model
    try:
        model.is_sd1 = False  # what a Flux checkpoint looks like to the WebUI: no is_sd* flag
        _, res = forge.generate(tsam=dict(enabled=True), steps=2, width=64, height=64)
    finally:
        model.is_sd1 = True
    error = params(res.infotexts[0])["T-SAM error"]
    assert error.startswith("StableDiffusion is a diffusion transformer") and "without T-SAM" in error


def test_preview_before_any_generation_loads_the_checkpoint_on_forges_main_thread(forge, small_sd):
    """Forge loads a checkpoint with the first generation after it is chosen; until then
    ``shared.sd_model`` is a placeholder. The preview loads it, on Forge's main thread."""
    sd_models, shared, main_thread = host("modules.sd_models"), host("modules.shared"), host("modules_forge.main_thread")
    forge.load("random-sd15-c", small_sd)
    shared.sd_model = sd_models.model_data.sd_model = sd_models.FakeInitialModel()
    main_thread.threads.clear()
    try:
        preview = host("tsam_ext.host.preview")
        titles = [t for t, _ in preview.panels("a black car and a white clock", 3, "reference")]
        assert titles == ["T (gamma 3, reference order)"]
        assert shared.sd_model is not None and shared.sd_model.sd_checkpoint_info.name == "random-sd15-c"
        assert [t.name for t in main_thread.threads] == ["forge-main-thread"]
        flux = host("backend.diffusion_engine.flux").Flux()
        shared.sd_model = sd_models.model_data.sd_model = flux
        sd_models.model_data.forge_hash = str(sd_models.model_data.forge_loading_parameters)  # Flux is "loaded"
        import gradio as gr
        with pytest.raises(gr.Error, match="Flux is a diffusion transformer"):
            preview.panels("a cat", 3, "reference")
    finally:
        forge.load("random-sd15", small_sd)


def test_diagnostics_and_preview(forge):
    _, res = forge.generate(tsam=dict(enabled=True, refine=False, diagnostics=True), steps=3, width=64, height=64)
    assert len(res.images) == 2 and res.infotexts[1] == "T-SAM diagnostics of image 1"
    preview = host("tsam_ext.host.preview")
    titles = [t for t, _ in preview.panels("a cat BREAK a black dog AND a red ball <lora:style:0.8>", 2.5, "paper")]
    assert titles == ["T (sub-prompt 1, chunk 1, gamma 2.5, paper order)", "T (sub-prompt 1, chunk 2, gamma 2.5, paper order)",
                      "T (sub-prompt 2, gamma 2.5, paper order)"]


def test_an_interrupt_during_guidance_stops_at_once_and_keeps_the_image(forge, monkeypatch):
    shared = host("modules.shared")
    passes = []
    real = guidance._loss_and_grad

    def counting(*args, **kwargs):
        passes.append(1)
        if len(passes) == 2:
            shared.state.interrupted = True
        return real(*args, **kwargs)

    monkeypatch.setattr(guidance, "_loss_and_grad", counting)
    _, res = forge.generate(tsam=dict(enabled=True, refine=True), steps=3, width=64, height=64)
    assert len(passes) == 2 and len(res.latents) == 1


def test_the_guidance_pass_calls_the_unet_as_forge_does_for_cond_rows(forge, monkeypatch):
    """What another extension put on this pass's UNet patcher (transformer options, an inpainting
    model's concat image) reaches the guidance pass, whose rows are all marked conditional."""
    scripts = host("modules.scripts")
    k_model = host("backend.modules.k_model")
    calls, real = [], k_model.KModel.apply_model

    def spy(self, x, t, c_concat=None, **kwargs):
        if torch.is_grad_enabled():
            calls.append((None if c_concat is None else tuple(c_concat.shape), kwargs["transformer_options"]))
        return real(self, x, t, **kwargs)  # the stand-in UNet has no inpainting channels

    class Patcher(scripts.Script):
        def title(self):
            return "patcher"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            unet = p.sd_model.forge_objects.unet.clone()
            unet.model_options["transformer_options"]["other_extension"] = "here"
            unet.extra_concat_condition = torch.zeros(1, 5, 8, 8)
            p.sd_model.forge_objects.unet = unet

    monkeypatch.setattr(k_model.KModel, "apply_model", spy)
    runner = scripts.ScriptRunner([Patcher, forge.module.Script])
    import gradio as gr
    with gr.Blocks():
        runner.setup_ui()
    args = runner.default_args()
    args[1] = True
    forge.generate(runner=runner, raw_args=args, steps=2, width=64, height=64)
    assert calls
    concat, options = calls[0]
    assert concat == (1, 5, 8, 8) and options["other_extension"] == "here"
    assert options["cond_or_uncond"] == [0] and options["cond_indices"] == [0] and options["uncond_indices"] == []


def test_the_weight_swap_is_all_or_nothing(forge, monkeypatch):
    """A failure part-way through aliasing Forge's weights puts back every weight swapped so far."""
    autograd = host("tsam_ext.host.forge.autograd")
    unet = forge.model.forge_objects.unet.model.diffusion_model
    before = {k: id(v) for k, v in unet.named_parameters()}
    real, calls = autograd.alias, []

    def failing(t):
        calls.append(1)
        if len(calls) == 50:
            raise RuntimeError("injected")
        return real(t)

    monkeypatch.setattr(autograd, "alias", failing)
    with pytest.raises(RuntimeError, match="injected"):
        with autograd.normal_weights(unet):
            pass
    assert {k: id(v) for k, v in unet.named_parameters()} == before
