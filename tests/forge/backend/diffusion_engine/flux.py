"""Mirrors backend/diffusion_engine/flux.py ``Flux`` as far as the WebUI's flags go: none of the
legacy ``is_sd*`` flags is set (its transformer, backend/nn/flux.py, has joint attention and no
UNet); nothing here can sample."""

from backend.diffusion_engine.base import ForgeDiffusionEngine


class Flux(ForgeDiffusionEngine):
    def __init__(self):
        super().__init__()
        self.use_distilled_cfg_scale = True
