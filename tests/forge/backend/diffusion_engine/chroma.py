"""Mirrors backend/diffusion_engine/chroma.py ``Chroma`` as far as the WebUI's flags go: none of
the legacy ``is_sd*`` flags is set (backend/nn/chroma.py is a Flux-style transformer with joint
attention, T5 text only); nothing here can sample."""

from backend.diffusion_engine.base import ForgeDiffusionEngine


class Chroma(ForgeDiffusionEngine):
    pass
