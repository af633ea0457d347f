"""Mirrors backend/patcher/lora.py ``LoraLoader.refresh`` (:351-441): under ``torch.inference_mode``
it puts the backed-up original Parameters back, then replaces each patched weight by a new
``nn.Parameter`` holding the merged weight (an inference tensor), keeping the original as backup.
``merge_lora_to_weight`` is its "diff" patch: weight + strength * delta, on a clone."""

import torch

from backend import utils


def merge_lora_to_weight(patches, weight, key="online_lora", computation_dtype=torch.float32):
    weight = weight.clone() if weight.dtype == computation_dtype else weight.to(dtype=computation_dtype)
    for strength, delta, strength_model, _offset, _function in patches:
        weight = weight * strength_model if strength_model != 1.0 else weight
        weight += strength * delta.to(weight)
    return weight


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        merged = {}
        for _identifier, patches in lora_patches.items():
            for key, current in patches.items():
                merged[key] = merged.get(key, []) + current
        for key, weight in self.backup.items():
            utils.set_attr_raw(self.model, key, weight)
        self.backup = {}
        for key, current in merged.items():
            weight = utils.get_attr(self.model, key)
            assert isinstance(weight, torch.nn.Parameter)
            self.backup.setdefault(key, weight.to(device=offload_device))
            utils.set_attr_raw(self.model, key, torch.nn.Parameter(merge_lora_to_weight(current, weight, key), requires_grad=False))
        self.loaded_hash = hashes
