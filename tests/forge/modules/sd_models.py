"""Mirrors Forge's modules/sd_models.py: ``model_data`` (the loaded model and the loading
parameters) and ``forge_model_reload`` (:473, under ``torch.inference_mode``): a new model from
``forge_loader`` when the loading parameters changed, with its ``sd_model_hash``. A checkpoint
here is ``CheckpointInfo(name, checkpoint)`` over a ``tsam_ext.runtime.sd1.SD1``;
``checkpoint_change`` stands for modules_forge/main_entry.py's. Until a generation (or
``forge_model_reload``) loads a checkpoint, the model is a ``FakeInitialModel``."""

from dataclasses import dataclass

import torch

from backend.loader import forge_loader
from modules import shared


@dataclass(frozen=True)
class CheckpointInfo:
    name: str
    checkpoint: object

    def calculate_shorthash(self):
        return f"{abs(hash(self.name)) % 16 ** 10:010x}"

    @property
    def short_title(self):
        return f"{self.name} [{self.calculate_shorthash()}]"


class FakeInitialModel:
    """What ``shared.sd_model`` is until the first generation loads a checkpoint (:385)."""

    def __init__(self):
        self.cond_stage_model = None


class ModelData:
    def __init__(self):
        self.sd_model = FakeInitialModel()
        self.forge_hash = None
        self.forge_loading_parameters = {}

    def get_sd_model(self):
        return self.sd_model


model_data = ModelData()


def checkpoint_change(info: CheckpointInfo) -> None:
    model_data.forge_loading_parameters = {"checkpoint_info": info}


@torch.inference_mode()
def forge_model_reload():
    current_hash = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current_hash:
        return model_data.sd_model, False
    model_data.sd_model = shared.sd_model = None
    info = model_data.forge_loading_parameters["checkpoint_info"]
    sd_model = forge_loader(info.checkpoint)
    sd_model.sd_checkpoint_info = info
    sd_model.sd_model_hash = info.calculate_shorthash()
    model_data.sd_model = shared.sd_model = sd_model
    model_data.forge_hash = current_hash
    return sd_model, True
