"""Mirrors backend/patcher/base.py ``ModelPatcher``: one ``LoraLoader`` per model, shared by every
clone; ``clone()`` shares the model, copies the LoRA patches and deep-copies ``model_options``;
``add_patches`` registers a LoRA's patches for the model's parameter keys; ``refresh_loras``; what
the memory manager calls to load and unload it (``is_clone``, ``model_patches_to``,
``forge_patch_model`` / ``forge_unpatch_model``: the model to a device, :257; no test sets object
patches).
A model's weights start where ``current_device`` says (on the emulated GPU machine of
``memory_management``: the CPU until it is loaded, as Forge builds them)."""

import copy

from backend import memory_management
from backend.patcher.lora import LoraLoader


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.model = model
        self.size = size
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device, self.offload_device = load_device, offload_device
        self.current_device = offload_device if current_device is None else current_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
            memory_management.module_to(model, self.current_device)
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

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape=input_shape)

    def model_dtype(self):
        return getattr(self.model, "computation_dtype", None)

    def model_patches_to(self, device):
        to = self.model_options["transformer_options"]
        for patch_list in to.get("patches", {}).values():
            for i in range(len(patch_list)):
                if hasattr(patch_list[i], "to"):
                    patch_list[i] = patch_list[i].to(device)
        for patch_list in to.get("patches_replace", {}).values():
            for k in patch_list:
                if hasattr(patch_list[k], "to"):
                    patch_list[k] = patch_list[k].to(device)

    def forge_patch_model(self, target_device=None):
        if target_device is not None:
            memory_management.module_to(self.model, target_device)
            self.current_device = target_device
        return self.model

    def forge_unpatch_model(self, target_device=None):
        if target_device is not None:
            memory_management.module_to(self.model, target_device)
            self.current_device = target_device

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)
