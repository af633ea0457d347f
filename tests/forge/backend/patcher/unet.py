"""Mirrors backend/patcher/unet.py ``UnetPatcher``: a ModelPatcher over a ``KModel`` whose clone
also carries the ControlNet list (``add_patched_controlnet`` links a new one in front,
``list_controlnets`` walks it) and the extra concat condition; ``append_model_option`` and the
patch setters that sampling reads (conditioning modifiers, pre-CFG functions, block modifiers,
the UNet function wrapper)."""

import copy

from backend import memory_management
from backend.modules.k_model import KModel
from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    @classmethod
    def from_model(cls, model, predictor):
        """The devices are those backend/loader.py gives the UNet (:146-173)."""
        return UnetPatcher(KModel(model=model, k_predictor=predictor), load_device=memory_management.get_torch_device(),
                           offload_device=memory_management.unet_offload_device(),
                           current_device=memory_management.unet_inital_load_device())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None
        self.extra_concat_condition = None

    def clone(self):
        n = UnetPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.controlnet_linked_list = self.controlnet_linked_list
        n.extra_concat_condition = self.extra_concat_condition
        return n

    def add_patched_controlnet(self, cnet):
        cnet.set_previous_controlnet(self.controlnet_linked_list)
        self.controlnet_linked_list = cnet

    def list_controlnets(self):
        results, pointer = [], self.controlnet_linked_list
        while pointer is not None:
            results.append(pointer)
            pointer = pointer.previous_controlnet
        return results

    def append_model_option(self, k, v, ensure_uniqueness=False):
        if k not in self.model_options:
            self.model_options[k] = []
        if ensure_uniqueness and v in self.model_options[k]:
            return
        self.model_options[k].append(v)

    def append_transformer_option(self, k, v, ensure_uniqueness=False):
        to = self.model_options["transformer_options"]
        if k not in to:
            to[k] = []
        if ensure_uniqueness and v in to[k]:
            return
        to[k].append(v)

    def add_conditioning_modifier(self, modifier, ensure_uniqueness=False):
        self.append_model_option("conditioning_modifiers", modifier, ensure_uniqueness)

    def add_sampler_pre_cfg_function(self, modifier, ensure_uniqueness=False):
        self.append_model_option("sampler_pre_cfg_function", modifier, ensure_uniqueness)

    def add_block_modifier(self, modifier, ensure_uniqueness=False):
        self.append_transformer_option("block_modifiers", modifier, ensure_uniqueness)

    def set_model_unet_function_wrapper(self, unet_wrapper_function):  # base.py:146
        self.model_options["model_function_wrapper"] = unet_wrapper_function
