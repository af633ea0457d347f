"""Mirrors backend/patcher/lora.py ``LoraLoader.refresh`` (:351-441): under ``torch.inference_mode``
it takes the online patches off their layers and puts the backed-up original Parameters back;
then a patch in online mode goes onto its layer (``forge_online_loras``, merged at every call by
backend/operations.py), any other replaces the weight by a new ``nn.Parameter`` holding the
merged weight (an inference tensor), keeping the original as backup. ``merge_lora_to_weight``
(:84) is an ``@torch.inference_mode()`` function; here its "diff" patch: weight + strength * delta,
on a clone."""

import torch

from backend import utils


@torch.inference_mode()
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
        self.online_backup = []
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        merged = {}
        for (_, _, _, online_mode), patches in lora_patches.items():
            for key, current in patches.items():
                merged[(key, online_mode)] = merged.get((key, online_mode), []) + current
        for m in set(self.online_backup):
            del m.forge_online_loras
        self.online_backup = []
        for key, weight in self.backup.items():
            utils.set_attr_raw(self.model, key, weight)
        self.backup = {}
        for (key, online_mode), current in merged.items():
            weight = utils.get_attr(self.model, key)
            assert isinstance(weight, torch.nn.Parameter)
            if online_mode:
                parent_layer = utils.get_attr(self.model, key.rsplit(".", 1)[0])
                if not hasattr(parent_layer, "forge_online_loras"):
                    parent_layer.forge_online_loras = {}
                parent_layer.forge_online_loras[key.rsplit(".", 1)[1]] = current
                self.online_backup.append(parent_layer)
                continue
            self.backup.setdefault(key, weight.to(device=offload_device))
            utils.set_attr_raw(self.model, key, torch.nn.Parameter(merge_lora_to_weight(current, weight, key), requires_grad=False))
        self.loaded_hash = hashes
