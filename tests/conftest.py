import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import webui as _webui  # noqa: E402,F401  (the A1111 stand-in and k-diffusion's samplers, importable)

import pytest
import torch


@pytest.fixture(scope="session")
def small_sd():
    """SD1.x's real architectures (ldm UNetModel at 32 base channels, full CLIP-L text), peaky random weights."""
    from tsam_ext.runtime import sd1

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    return sd1.build(model_channels=32, decoder=False, seed=0)


@pytest.fixture(scope="session")
def targets_of(small_sd):
    """prompt -> (list of RowTarget chunks, cond [1, 77k, 768]) through the real tokenizer and CLIP."""
    from tsam_ext.runtime import sd1
    from tsam_ext.core.guidance import ChunkTarget
    from tsam_ext.core.text_maps import text_target
    from tsam_ext.families.clip import clip_self_attention

    cache = {}

    def build(prompt, gamma=3.0, order="reference"):
        key = (prompt, gamma, order)
        if key not in cache:
            chunks = sd1.prompt_chunks(small_sd.tokenizer, prompt)
            att = clip_self_attention(small_sd.text_model, torch.tensor([c.ids for c in chunks]))
            targets = tuple(ChunkTarget(text_target(att[k], c.n, gamma, order), 77 * k) for k, c in enumerate(chunks))
            cache[key] = (targets, small_sd.encode(chunks))
        return cache[key]

    return build


@pytest.fixture(scope="session")
def small_sd2():
    """SD 2.x 768-v on the real ldm UNet (32 base channels) and ldm's FrozenOpenCLIPEmbedder over
    open_clip's ViT-H text tower (24 layers x 16 heads, 8 channels each), peaky random weights."""
    from tsam_ext.runtime import models

    return models.build("sd2-v", model_channels=32, decoder=False, text_head_dim=8)


@pytest.fixture(scope="session")
def small_sdxl():
    """SDXL's layout (70 cross-attention layers) on ldm's blocks (32 base channels), CLIP-L
    (12 x 12 heads) and open_clip's ViT-bigG text tower (32 x 20 heads), 8 channels a head."""
    from tsam_ext.runtime import models

    return models.build("sdxl", model_channels=32, decoder=False, text_head_dim=8)


@pytest.fixture(scope="session")
def standins(small_sd2, small_sdxl):
    """The WebUI's sd_model of each family (built once; tests that change a model build their own)."""
    return {"sd2": _webui.make_sd_model(small_sd2), "sdxl": _webui.make_sd_model(small_sdxl)}


@pytest.fixture
def on_model(webui):
    """``on_model(sd_model)``: the WebUI stand-in runs on that checkpoint until the test ends."""
    from modules import shared

    saved = shared.sd_model

    def use(sd_model):
        shared.sd_model = sd_model
        _webui.reset_state()
        return sd_model

    yield use
    shared.sd_model = saved


@pytest.fixture(scope="session")
def webui(small_sd):
    """The WebUI stand-in with T-SAM installed, over the real architectures."""
    return _webui.WebUI(_webui.make_sd_model(small_sd))


@pytest.fixture(autouse=True)
def _fresh_webui_state(request):
    import k_diffusion.sampling
    k_diffusion.sampling.torch = torch  # the WebUI (stand-in) points it at a job's seeded RNG
    if "webui" in request.fixturenames:
        _webui.reset_state()
    yield
