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
