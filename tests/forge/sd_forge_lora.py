"""Mirrors extensions-builtin/sd_forge_lora: ``ExtraNetworkLora.activate`` -> ``networks.load_networks``
for the UNet: when the requested LoRAs changed, the UNet patcher restarts from
``forge_objects_original``, each LoRA is ``add_patches``-ed onto a clone, and
``forge_objects_after_applying_lora`` is taken; the merge into the weights happens when the patcher
is next loaded (``refresh_loras``). A LoRA here is ``{parameter key: weight delta}`` (a "diff"
patch); text-encoder LoRA is left out."""

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
    for name, multiplier in compiled:
        unet = current_sd.forge_objects.unet.clone()
        unet.add_patches(filename=name, patches=available_networks[name], strength_patch=multiplier)
        current_sd.forge_objects.unet = unet
    current_sd.forge_objects_after_applying_lora = current_sd.forge_objects.shallow_copy()
