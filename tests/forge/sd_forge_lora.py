"""Mirrors extensions-builtin/sd_forge_lora: ``ExtraNetworkLora.activate`` -> ``networks.load_networks``
for the UNet: when the requested LoRAs changed, the UNet patcher restarts from
``forge_objects_original``, each LoRA is ``add_patches``-ed onto a clone, and
``forge_objects_after_applying_lora`` is taken; the merge into the weights happens when the patcher
is next loaded (``refresh_loras``). A LoRA here is ``{parameter key: weight delta}`` (a "diff"
patch); text-encoder LoRA is left out. The patches are online (merged at every layer call) when
``dynamic_args["online_lora"]`` is set and the UNet's weights are stored in a low-bit dtype
(networks.py :102-105)."""

import torch

from backend.args import dynamic_args

available_networks: dict[str, dict] = {}


class ExtraNetworkLora:
    name = "lora"

    def activate(self, p, params_list):
        names = [params[0] for params in params_list]
        multipliers = [float(params[1]) if len(params) > 1 else 1.0 for params in params_list]
        load_networks(p.sd_model, names, multipliers)


def load_networks(current_sd, names, multipliers):
    compiled = [[name, m] for name, m in zip(names, multipliers)]
    if current_sd.current_lora_hash == str(compiled):
        return
    current_sd.current_lora_hash = str(compiled)
    current_sd.forge_objects.unet = current_sd.forge_objects_original.unet
    online_mode = dynamic_args.get("online_lora", False)
    if current_sd.forge_objects.unet.model.storage_dtype in [torch.float32, torch.float16, torch.bfloat16]:
        online_mode = False
    for name, multiplier in compiled:
        unet = current_sd.forge_objects.unet.clone()
        unet.add_patches(filename=name, patches=available_networks[name], strength_patch=multiplier, online_mode=online_mode)
        current_sd.forge_objects.unet = unet
    current_sd.forge_objects_after_applying_lora = current_sd.forge_objects.shallow_copy()
