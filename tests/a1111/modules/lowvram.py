"""Mirrors modules/lowvram.py: ``--medvram`` / ``--medvram-sdxl`` / ``--lowvram`` keep one big
module on the GPU at a time. ``setup_for_low_vram`` takes the text encoder(s), the VAE and the
UNet out of the model, moves the rest to the device, and hooks each of them so that calling it
moves it to the device and the previous one back: SDXL's hook sits on the whole ``conditioner``
only; SD 2.x's on the open_clip model and its ``token_embedding`` (moving the whole embedder);
SD 1.x's on the CLIP transformer. With ``--lowvram`` every UNet block is hooked on its own.
(SD3's ``medvram_fields`` / ``medvram_modules`` branches are left out.)
``module_in_gpu`` is the module the last hook moved (the device is the CPU here, so where a
module is can only be seen through it)."""

from collections import namedtuple

import torch

from modules import devices, shared

module_in_gpu = None
cpu = torch.device("cpu")

ModuleWithParent = namedtuple("ModuleWithParent", ["module", "parent"], defaults=["None"])


def send_everything_to_cpu():
    global module_in_gpu
    if module_in_gpu is not None:
        module_in_gpu.to(cpu)
    module_in_gpu = None


def is_needed(sd_model):
    return shared.cmd_opts.lowvram or shared.cmd_opts.medvram or shared.cmd_opts.medvram_sdxl and hasattr(sd_model, "conditioner")


def apply(sd_model):
    if is_needed(sd_model):
        setup_for_low_vram(sd_model, not shared.cmd_opts.lowvram)
    else:
        sd_model.lowvram = False


def setup_for_low_vram(sd_model, use_medvram):
    if getattr(sd_model, "lowvram", False):
        return
    sd_model.lowvram = True
    parents = {}

    def send_me_to_gpu(module, _):
        global module_in_gpu
        module = parents.get(module, module)
        if module_in_gpu == module:
            return
        if module_in_gpu is not None:
            module_in_gpu.to(cpu)
        module.to(devices.device)
        module_in_gpu = module

    first_stage_model = sd_model.first_stage_model
    encode, decode = first_stage_model.encode, first_stage_model.decode

    def first_stage_model_encode_wrap(x):
        send_me_to_gpu(first_stage_model, None)
        return encode(x)

    def first_stage_model_decode_wrap(z):
        send_me_to_gpu(first_stage_model, None)
        return decode(z)

    to_remain_in_cpu = [(sd_model, "first_stage_model"), (sd_model, "depth_model"), (sd_model, "embedder"), (sd_model, "model")]
    is_sdxl = hasattr(sd_model, "conditioner")
    is_sd2 = not is_sdxl and hasattr(sd_model.cond_stage_model, "model")
    if is_sdxl:
        to_remain_in_cpu.append((sd_model, "conditioner"))
    elif is_sd2:
        to_remain_in_cpu.append((sd_model.cond_stage_model, "model"))
    else:
        to_remain_in_cpu.append((sd_model.cond_stage_model, "transformer"))
    stored = []
    for obj, field in to_remain_in_cpu:
        stored.append(getattr(obj, field, None))
        setattr(obj, field, None)
    sd_model.to(devices.device)
    for (obj, field), module in zip(to_remain_in_cpu, stored):
        setattr(obj, field, module)

    if is_sdxl:
        sd_model.conditioner.register_forward_pre_hook(send_me_to_gpu)
    elif is_sd2:
        sd_model.cond_stage_model.model.register_forward_pre_hook(send_me_to_gpu)
        sd_model.cond_stage_model.model.token_embedding.register_forward_pre_hook(send_me_to_gpu)
        parents[sd_model.cond_stage_model.model] = sd_model.cond_stage_model
        parents[sd_model.cond_stage_model.model.token_embedding] = sd_model.cond_stage_model
    else:
        sd_model.cond_stage_model.transformer.register_forward_pre_hook(send_me_to_gpu)
        parents[sd_model.cond_stage_model.transformer] = sd_model.cond_stage_model

    sd_model.first_stage_model.register_forward_pre_hook(send_me_to_gpu)
    sd_model.first_stage_model.encode = first_stage_model_encode_wrap
    sd_model.first_stage_model.decode = first_stage_model_decode_wrap
    if use_medvram:
        sd_model.model.register_forward_pre_hook(send_me_to_gpu)
    else:
        diff_model = sd_model.model.diffusion_model
        diff_model.time_embed.register_forward_pre_hook(send_me_to_gpu)
        for block in diff_model.input_blocks:
            block.register_forward_pre_hook(send_me_to_gpu)
        diff_model.middle_block.register_forward_pre_hook(send_me_to_gpu)
        for block in diff_model.output_blocks:
            block.register_forward_pre_hook(send_me_to_gpu)


def is_enabled(sd_model):
    return sd_model.lowvram
