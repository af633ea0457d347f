"""T-SAM under Forge's memory manager on a GPU machine (emulated by the stand-in of
backend/memory_management.py: a model that is not loaded cannot compute): nothing T-SAM does
between the sampler's calls leaves a model that sampling holds unloaded. The case that moves
models is the refiner switch: T-SAM encodes the refiner's T with its text encoder in the middle of
sampling, which unloads the refiner's UNet under --always-offload-from-vram or when VRAM is short."""

import importlib

import pytest
import torch

from tsam_ext.core import controller

PROMPT = "a black car and a white clock"
REAL_GUIDE = controller.GuidedPass.guide


def host(name):
    return importlib.import_module(name)


@pytest.fixture
def gpu(forge, small_sd):
    """A GPU machine of the emulated kind (``emulate_gpu`` arguments), with the model rebuilt on it."""
    memory = host("backend.memory_management")

    def on(vram, always_offload):
        memory.emulate_gpu(vram, memory.VRAMState.NORMAL_VRAM, always_offload)
        forge.load("random-sd15 on the GPU", small_sd)
        return memory

    yield on
    memory.emulate_gpu(0, memory.VRAMState.DISABLED)
    forge.load("random-sd15", small_sd)


def refiner(forge, small_sd):
    return forge.sd_models.CheckpointInfo("random-sd15 as refiner", small_sd)


def spy_guided(monkeypatch):
    """Per guided step: (step, whether the UNet the recorder reads is the one loaded for sampling)."""
    seen = []

    def guide(self, x, step, rows, *args):
        seen.append((step, self.recorder.unet is host("modules.shared").sd_model.forge_objects.unet.model.diffusion_model))
        return REAL_GUIDE(self, x, step, rows, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", guide)
    return seen


def test_the_emulated_gpu_unloads_and_fails_like_a_gpu_machine(forge, small_sd, gpu):
    memory = gpu(vram=0, always_offload=True)
    model = forge.model
    clip, unet = model.forge_objects.clip.patcher, model.forge_objects.unet
    assert not memory.is_loaded(unet.model) and not memory.is_loaded(clip.model)
    memory.load_model_gpu(clip)
    memory.load_model_gpu(unet)  # offloads everything not kept: the text encoder
    assert memory.is_loaded(unet.model) and not memory.is_loaded(clip.model)
    memory.load_model_gpu(clip)
    with pytest.raises(RuntimeError, match="meta"):
        unet.model.diffusion_model(torch.zeros(1, 4, 8, 8), torch.ones(1), context=torch.zeros(1, 77, 768))


@pytest.mark.parametrize("vram, always_offload", [(0, True), (1 << 30, False)], ids=["always-offload", "vram-short"])
def test_a_refiner_switch_keeps_its_unet_loaded_for_sampling(forge, small_sd, gpu, monkeypatch, vram, always_offload):
    gpu(vram, always_offload)
    _, alone = forge.bare(prompt=PROMPT, refiner_checkpoint_info=refiner(forge, small_sd), refiner_switch_at=0.5)
    seen = spy_guided(monkeypatch)
    _, res = forge.generate(tsam=dict(enabled=True, refine=False, guided_steps=100), prompt=PROMPT,
                            refiner_checkpoint_info=refiner(forge, small_sd), refiner_switch_at=0.5)
    got = host("modules.infotext_utils").parse_generation_parameters(res.infotexts[0])
    assert got["Refiner"] == refiner(forge, small_sd).short_title and "T-SAM warning" not in got, got
    assert [s for s, _ in seen] == list(range(6)) and all(current for _, current in seen)
    assert "T-SAM loss trace" in got and torch.isfinite(res.latents[0]).all()
    assert not torch.equal(res.latents[0], alone.latents[0])


def test_hires_fix_and_img2img_are_guided_with_every_model_offloaded_between_uses(forge, small_sd, gpu, monkeypatch):
    gpu(vram=0, always_offload=True)
    seen = spy_guided(monkeypatch)
    _, res = forge.generate(tsam=dict(enabled=True, refine=False), prompt=PROMPT, enable_hr=True, hr_scale=1.5,
                            hr_second_pass_steps=4, denoising_strength=0.5, steps=5)
    init = torch.randn(1, 4, 16, 16)
    _, res2 = forge.generate(tsam=dict(enabled=True, refine=False), img2img=True, init_latent=init, denoising_strength=0.5)
    for r in (res, res2):
        got = host("modules.infotext_utils").parse_generation_parameters(r.infotexts[0])
        assert "T-SAM loss trace" in got and "T-SAM warning" not in got, got
    assert seen and all(current for _, current in seen)
