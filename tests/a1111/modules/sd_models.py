"""Mirrors the part of modules/sd_models.py a mid-sampling checkpoint switch (the refiner) goes
through: ``CheckpointInfo`` (``title``, ``short_title``, ``filename``), ``SkipWritingToConfig``
and ``reload_model_weights``: a checkpoint of the loaded model's config is loaded into the same
model object (hijack undone, weights and hash replaced, hijack redone); one of another config
is a new model object that replaces ``shared.sd_model``. A stand-in checkpoint is a state dict
(un-hijacked keys) or, for another config, a function that builds the model."""

from modules import devices, sd_hijack, shared


class CheckpointInfo:
    def __init__(self, name: str, shorthash: str, config: str, state_dict=None, build=None):
        self.filename = f"models/Stable-diffusion/{name}.safetensors"
        self.name = self.name_for_extra = self.model_name = name
        self.shorthash = self.hash = shorthash
        self.title = f"{name}.safetensors [{shorthash}]"
        self.short_title = f"{name} [{shorthash}]"
        self.config, self.state_dict, self.build = config, state_dict, build


def attach(model, info: CheckpointInfo):
    """What ``load_model_weights`` records on the model it loaded a checkpoint into."""
    model.sd_checkpoint_info, model.sd_model_checkpoint = info, info.filename
    model.sd_model_hash, model.used_config = info.shorthash, info.config
    return model


class SkipWritingToConfig:
    skip = False

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, *exc):
        SkipWritingToConfig.skip = self.previous


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    sd_model = sd_model or shared.sd_model
    if sd_model.sd_model_checkpoint == info.filename and not forced_reload:
        return sd_model
    sd_hijack.model_hijack.undo_hijack(sd_model)
    if info.config != sd_model.used_config:
        shared.sd_model = attach(info.build(), info)  # load_model: a new model, hijacked when built
        return shared.sd_model
    sd_model.load_state_dict(info.state_dict)
    attach(sd_model, info)
    sd_hijack.model_hijack.hijack(sd_model)
    devices.torch_gc()
    shared.sd_model = sd_model
    return sd_model
