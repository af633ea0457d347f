"""The guidance pass in the Forge stand-in is the UNet call Forge's ``sampling_function`` makes
(tests/forge/backend/sampling/sampling_function.py mirrors it): the built-in ControlNet's
residuals with the exact gradient through the UNet and the ControlNet
(backend/patcher/controlnet.py, backend/nn/cnets/cldm.py), each image's own hint and nothing of
ControlNet's cached state changed for the sampler; the conditioning modifiers, pre-CFG functions
and the UNet function wrapper; and, when inpainting, the blended latent Forge's denoiser feeds the
UNet, with the kept region left where it is."""

import importlib

import gradio as gr
import pytest
import torch

from gradcheck import finite_difference_check
from tsam_ext.core import controller
from tsam_ext.core.infotext import TRACE, WARNING

PROMPT = "a black car and a white clock"
SIZE, STEPS = 64, 4


def host(name):
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def control_model(forge):
    """A ControlNet of the stand-in checkpoint's UNet, loaded as Forge loads weights (inference tensors)."""
    cldm = host("backend.nn.cnets.cldm")
    unet = forge.model.forge_objects.unet.model.diffusion_model
    torch.manual_seed(11)
    with torch.inference_mode():
        model = cldm.ControlNet(unet, scale=1.0)
        for m in model.modules():
            for store in (m._parameters, m._buffers):
                for k, t in store.items():
                    if t is not None:
                        store[k] = torch.nn.Parameter(t.clone(), requires_grad=False) if store is m._parameters else t.clone()
    return model


def hints(batch=1, seed=5):
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def patch_script(patch):
    """A Script that patches this pass's UNet patcher (``patch(p, unet) -> unet``) right before
    sampling, as Forge's ControlNet and other built-ins do in ``process_before_every_sampling``."""
    scripts = host("modules.scripts")

    class Patcher(scripts.Script):
        def title(self):
            return "patcher"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            p.sd_model.forge_objects.unet = patch(p, p.sd_model.forge_objects.unet.clone())

    return Patcher


def generate(forge, patch=None, tsam=None, img2img=False, **kwargs):
    """(p, result) with T-SAM set by ``tsam`` (None: T-SAM installed but off) after ``patch``."""
    from tsam_ext.core.settings import NAMES

    scripts = host("modules.scripts")
    classes = ([patch_script(patch)] if patch else []) + [forge.module.Script]
    runner = scripts.ScriptRunner(classes, is_img2img=img2img)
    with gr.Blocks():
        runner.setup_ui()
    args = runner.default_args()
    tsam_script = runner.scripts[-1]
    for name, value in ({"enabled": True, "refine": False} | tsam if tsam is not None else {}).items():
        args[tsam_script.args_from + NAMES.index(name)] = value
    defaults = dict(seed=3, steps=STEPS, width=SIZE, height=SIZE, sampler_name="Euler", prompt=PROMPT)
    return forge.generate(runner=runner, raw_args=args, img2img=img2img, **(defaults | kwargs))


def with_controlnet(control_model, image=None, strength=1.0, start=0.0, end=1.0):
    cn = host("backend.patcher.controlnet")
    unit = cn.ControlNet(control_model)
    image = hints() if image is None else image
    return lambda p, unet: cn.apply_controlnet_advanced(unet, unit, image, strength, start, end)


def first_losses(monkeypatch):
    real, losses = controller.guidance_step, []

    def watching(*args, **kw):
        out = real(*args, **kw)
        losses.append(out.losses)  # image -> loss of every pass
        return out

    monkeypatch.setattr(controller, "guidance_step", watching)
    return losses


@pytest.mark.parametrize("batch_size", [1, 2])
def test_gradient_through_forges_controlnet_is_exact(forge, control_model, monkeypatch, batch_size):
    """Against a central difference of the loss of the same composed function (UNet + ControlNet,
    both with Forge's inference-mode weights); before, the pass called ``apply_model`` without
    ``control`` and guided a UNet with no residuals."""
    real, checks = controller.guidance_step, []

    def checking(z, rows, run_unet, recorder, alpha, **kw):
        out = real(z, rows, run_unet, recorder, alpha, **kw)
        if not checks and out.losses:
            checks.extend(finite_difference_check(z.float(), rows, run_unet, recorder, -out.delta / alpha))
        return out

    monkeypatch.setattr(controller, "guidance_step", checking)
    _, res = generate(forge, with_controlnet(control_model, hints(batch_size)), tsam={}, batch_size=batch_size,
                      prompt=[PROMPT] * batch_size)
    assert WARNING not in res.infotexts[0] and TRACE in res.infotexts[0]
    assert len(checks) == 2
    for analytic, numeric in checks:
        assert analytic == pytest.approx(numeric, rel=0.02, abs=1e-6)


def test_the_pass_sees_the_residuals_and_each_images_own_hint(forge, control_model, monkeypatch):
    """Only image 2 is guided (image 1's prompt is one word): its loss with hints [h1, h2] is its
    loss with [h2, h2], and differs from the loss without ControlNet and with [h1, h1] (a pass
    that took ControlNet's first hints, as its broadcast does for a batch, would read h1)."""
    h1, h2 = torch.zeros(1, 3, SIZE, SIZE), hints(seed=2)
    prompts = ["car", PROMPT]

    def loss(patch):
        losses = first_losses(monkeypatch)
        generate(forge, patch, tsam={}, batch_size=2, prompt=prompts)
        monkeypatch.undo()
        assert set(losses[0]) == {1}  # image 2 only
        return losses[0][1][0]

    mixed = loss(with_controlnet(control_model, torch.cat([h1, h2])))
    assert mixed == pytest.approx(loss(with_controlnet(control_model, torch.cat([h2, h2]))), rel=1e-6)
    assert abs(mixed - loss(with_controlnet(control_model, torch.cat([h1, h1])))) > 2e-5  # 100x the float noise
    assert abs(mixed - loss(None)) > 1e-3


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_at_alpha_zero_the_image_is_controlnets_alone(forge, control_model, start):
    """T-SAM's extra call leaves ControlNet's cached hint as sampling built it (batch of two
    hints, one image guided) and the random streams as they were: at alpha 0 the image is
    bit-identical to ControlNet alone, also when the unit starts after the first guided steps."""
    patch = with_controlnet(control_model, torch.cat([hints(seed=1), hints(seed=2)]), start=start)
    kw = dict(batch_size=2, prompt=["car", PROMPT])
    _, guided = generate(forge, patch, tsam=dict(alpha=0.0), **kw)
    _, alone = generate(forge, patch, **kw)
    assert "stopped" not in guided.infotexts[1] and TRACE in guided.infotexts[1]
    assert torch.equal(guided.latents[0], alone.latents[0])


def test_modifiers_pre_cfg_functions_and_the_unet_wrapper_are_in_the_pass(forge, monkeypatch):
    """What an extension adds to Forge's sampling (``add_conditioning_modifier``,
    ``add_sampler_pre_cfg_function``, ``set_model_unet_function_wrapper``) runs in the guidance
    pass on its rows, as in the sampler's call (before: the pass skipped all three)."""
    seen = {"modifier": [], "pre_cfg": [], "wrapper": []}

    def modifier(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        seen["modifier"].append((x.shape[0], torch.is_grad_enabled()))
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    def pre_cfg(model, cond, uncond, x, timestep, model_options):
        seen["pre_cfg"].append((x.shape[0], torch.is_grad_enabled()))
        return model, cond, uncond, x * 1.0, timestep, model_options

    def wrapper(apply_model, args):
        seen["wrapper"].append((args["input"].shape[0], args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def patch(p, unet):
        unet.add_conditioning_modifier(modifier)
        unet.add_sampler_pre_cfg_function(pre_cfg)
        unet.set_model_unet_function_wrapper(wrapper)
        return unet

    _, res = generate(forge, patch, tsam={}, steps=2)
    assert WARNING not in res.infotexts[0] and TRACE in res.infotexts[0]
    assert (1, True) in seen["modifier"] and (1, True) in seen["pre_cfg"]
    assert (1, [0]) in seen["wrapper"] and (2, [1, 0]) in seen["wrapper"]


def latent_mask():
    m = torch.zeros(SIZE // 8, SIZE // 8)
    m[:, SIZE // 16:] = 1
    return m


def test_inpainting_the_pass_sees_the_blend_and_the_kept_region_stays(forge, monkeypatch):
    """Forge's denoiser blends the noised original latent into the kept region before the UNet,
    for every sampler: the pass's UNet input is the sampler's own (same noise draw), and no guided
    step moves a kept pixel (before: the pass read and moved the unblended latent)."""
    real, deltas = controller.guidance_step, []

    def watching(*args, **kw):
        out = real(*args, **kw)
        deltas.append(out.delta.detach())
        return out

    monkeypatch.setattr(controller, "guidance_step", watching)
    k_model = host("backend.modules.k_model")
    inputs, apply = [], k_model.KModel.apply_model

    def spy(self, x, t, **kw):
        inputs.append((torch.is_grad_enabled(), x.detach().clone()))
        return apply(self, x, t, **kw)

    monkeypatch.setattr(k_model.KModel, "apply_model", spy)
    init = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(7))
    _, res = generate(forge, tsam=dict(alpha=4.0), img2img=True, init_latent=init, latent_mask=latent_mask(),
                      denoising_strength=0.75, steps=6)
    assert WARNING not in res.infotexts[0] and TRACE in res.infotexts[0]
    keep = latent_mask() == 0
    assert deltas and all(d[..., keep].abs().max() == 0 and d[..., ~keep].abs().max() > 0 for d in deltas)
    first = next(i for i, (grad, _x) in enumerate(inputs) if grad)
    pass_x, (_, sampler_x) = inputs[first][1], inputs[first + 1]
    torch.testing.assert_close(pass_x[0][..., keep], sampler_x[-1][..., keep], rtol=0, atol=1e-6)


def test_online_lora_is_in_the_pass_with_a_gradient(forge, monkeypatch):
    """A LoRA in online mode ("fp16 LoRA" on fp8 / nf4 weights: merged into a new weight at every
    layer call under ``@torch.inference_mode()``) is guided, with the LoRA in the pass's maps
    (before: "Inference tensors cannot be saved for backward" at step 1). The stand-in keeps
    float32 weights; the storage dtype is what Forge reads to choose online merging."""
    lora, args = host("sd_forge_lora"), host("backend.args")
    model = forge.model.forge_objects.unet.model
    key = "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_q.weight"
    shape = dict(model.named_parameters())[key].shape
    lora.available_networks["fp16"] = {key: torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.5}
    monkeypatch.setitem(args.dynamic_args, "online_lora", True)
    monkeypatch.setattr(type(model), "storage_dtype", torch.float8_e4m3fn, raising=False)
    monkeypatch.setattr(model, "storage_dtype", torch.float8_e4m3fn)
    try:
        first = []
        for prompt in (PROMPT + " <lora:fp16:1>", PROMPT):
            losses = first_losses(monkeypatch)
            _, res = generate(forge, tsam={}, prompt=prompt, steps=2)
            assert WARNING not in res.infotexts[0] and TRACE in res.infotexts[0]
            layer = forge.model.forge_objects.unet.model.diffusion_model.output_blocks[3][1].transformer_blocks[0].attn2.to_q
            assert hasattr(layer, "forge_online_loras") == ("<lora" in prompt)
            first.append(losses[0][0][0])
        assert abs(first[0] - first[1]) > 1e-4  # the LoRA on the query projection is in the maps
    finally:
        lora.available_networks.clear()
