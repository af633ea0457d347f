"""Mirrors the attributes of sgm/models/diffusion.py ``DiffusionEngine`` that A1111 reads:
``model`` (``OpenAIWrapper`` around the UNet), ``conditioner``, ``denoiser.scaling`` (eps or v),
``first_stage_model``. A1111 patches ``get_learned_conditioning`` and ``apply_model`` onto the
class (sd_models_xl.py)."""

from torch import nn


class EpsScaling:
    pass


class VScaling:
    pass


class Denoiser:
    def __init__(self, scaling):
        self.scaling = scaling


class DiffusionEngine(nn.Module):
    def __init__(self, model, conditioner, first_stage_model, scaling=None):
        super().__init__()
        self.model, self.conditioner, self.first_stage_model = model, conditioner, first_stage_model
        self.denoiser = Denoiser(scaling or EpsScaling())
