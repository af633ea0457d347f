"""Mirrors backend/patcher/base.py ``ModelPatcher``: one ``LoraLoader`` per model, shared by every
clone; ``clone()`` shares the model, copies the LoRA patches and deep-copies ``model_options``;
``add_patches`` registers a LoRA's patches for the model's parameter keys; ``refresh_loras``."""

import copy

from backend.patcher.lora import LoraLoader


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.model = model
        self.size = size
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device, self.offload_device, self.current_device = load_device, offload_device, current_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        keys = {k for k, _ in self.model.named_parameters()}
        this = {key: [[strength_patch, delta, strength_model, None, None]] for key, delta in patches.items() if key in keys}
        self.lora_patches[(filename, strength_patch, strength_model, online_mode)] = this
        return set(this)

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)
