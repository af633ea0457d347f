"""Mirrors backend/sampling/sampling_function.py (Forge dfdcbab6): ``sampling_function`` (the
concat condition of an inpainting model, the ControlNet list on every cond, the
``conditioning_modifiers``), ``sampling_function_inner`` (CFG 1 drops the uncond unless
``disable_cfg1_optimization``; ``sampler_pre_cfg_function``, ``sampler_cfg_function``,
``sampler_post_cfg_function``) and ``calc_cond_uncond_batch`` (``get_area_and_mult`` per entry,
entries batched while ``can_concat_cond`` and the memory estimate allow, popped from the end so
the UNet batch is [uncond, cond ...]; the transformer options with ``cond_or_uncond``, ``sigmas``,
cond marks and indices, set on every ControlNet of the list; ``c['control'] =
control.get_control(...)`` on a copy of the conds; ``model_function_wrapper`` around
``apply_model``). Areas and masks of conds are kept as the real file has them."""

import collections
import math

import torch

from backend import memory_management
from backend.sampling.condition import Condition, compile_conditions, compile_weighted_conditions


def get_area_and_mult(conds, x_in, timestep_in):
    area = (x_in.shape[2], x_in.shape[3], 0, 0)
    strength = 1.0
    if "timestep_start" in conds and timestep_in[0] > conds["timestep_start"]:
        return None
    if "timestep_end" in conds and timestep_in[0] < conds["timestep_end"]:
        return None
    if "area" in conds:
        area = conds["area"]
    if "strength" in conds:
        strength = conds["strength"]
    input_x = x_in[:, :, area[2]:area[0] + area[2], area[3]:area[1] + area[3]]
    if "mask" in conds:
        mask = conds["mask"][:, area[2]:area[0] + area[2], area[3]:area[1] + area[3]] * conds.get("mask_strength", 1.0)
        mask = mask.unsqueeze(1).repeat(input_x.shape[0] // mask.shape[0], input_x.shape[1], 1, 1)
    else:
        mask = torch.ones_like(input_x)
    mult = mask * strength
    conditioning = {c: v.process_cond(batch_size=x_in.shape[0], device=x_in.device, area=area) for c, v in conds["model_conds"].items()}
    cond_obj = collections.namedtuple("cond_obj", ["input_x", "mult", "conditioning", "area", "control", "patches"])
    return cond_obj(input_x, mult, conditioning, area, conds.get("control", None), None)


def cond_equal_size(c1, c2):
    if c1 is c2:
        return True
    if c1.keys() != c2.keys():
        return False
    return all(c1[k].can_concat(c2[k]) for k in c1)


def can_concat_cond(c1, c2):
    if c1.input_x.shape != c2.input_x.shape:
        return False

    def objects_concatable(obj1, obj2):
        if (obj1 is None) != (obj2 is None):
            return False
        return obj1 is None or obj1 is obj2

    if not objects_concatable(c1.control, c2.control) or not objects_concatable(c1.patches, c2.patches):
        return False
    return cond_equal_size(c1.conditioning, c2.conditioning)


def cond_cat(c_list):
    temp = {}
    for x in c_list:
        for k in x:
            temp.setdefault(k, []).append(x[k])
    return {k: conds[0].concat(conds[1:]) for k, conds in temp.items()}


def compute_cond_mark(cond_or_uncond, sigmas):
    cond_or_uncond_size = int(sigmas.shape[0])
    cond_mark = []
    for cx in cond_or_uncond:
        cond_mark += [cx] * cond_or_uncond_size
    return torch.Tensor(cond_mark).to(sigmas)


def compute_cond_indices(cond_or_uncond, sigmas):
    cl = int(sigmas.shape[0])
    cond_indices, uncond_indices = [], []
    for i, cx in enumerate(cond_or_uncond):
        (cond_indices if cx == 0 else uncond_indices).extend(range(i * cl, (i + 1) * cl))
    return cond_indices, uncond_indices


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    out_cond, out_count = torch.zeros_like(x_in), torch.ones_like(x_in) * 1e-37
    out_uncond, out_uncond_count = torch.zeros_like(x_in), torch.ones_like(x_in) * 1e-37
    COND, UNCOND = 0, 1
    to_run = []
    for x in cond:
        p = get_area_and_mult(x, x_in, timestep)
        if p is not None:
            to_run += [(p, COND)]
    if uncond is not None:
        for x in uncond:
            p = get_area_and_mult(x, x_in, timestep)
            if p is not None:
                to_run += [(p, UNCOND)]
    while len(to_run) > 0:
        first = to_run[0]
        first_shape = first[0][0].shape
        to_batch_temp = [x for x in range(len(to_run)) if can_concat_cond(to_run[x][0], first[0])]
        to_batch_temp.reverse()
        to_batch = to_batch_temp[:1]
        if memory_management.signal_empty_cache:
            memory_management.soft_empty_cache()
        free_memory = memory_management.get_free_memory(x_in.device)
        for i in range(1, len(to_batch_temp) + 1):
            batch_amount = to_batch_temp[:len(to_batch_temp) // i]
            input_shape = [len(batch_amount) * first_shape[0]] + list(first_shape)[1:]
            if model.memory_required(input_shape) < free_memory:
                to_batch = batch_amount
                break
        input_x, mult, c, cond_or_uncond, area = [], [], [], [], []
        control = patches = None
        for x in to_batch:
            o = to_run.pop(x)
            p = o[0]
            input_x.append(p.input_x)
            mult.append(p.mult)
            c.append(p.conditioning)
            area.append(p.area)
            cond_or_uncond.append(o[1])
            control, patches = p.control, p.patches
        batch_chunks = len(cond_or_uncond)
        input_x = torch.cat(input_x)
        c = cond_cat(c)
        timestep_ = torch.cat([timestep] * batch_chunks)
        transformer_options = model_options["transformer_options"].copy() if "transformer_options" in model_options else {}
        if patches is not None:
            if "patches" in transformer_options:
                cur_patches = transformer_options["patches"].copy()
                for p in patches:
                    cur_patches[p] = cur_patches[p] + patches[p] if p in cur_patches else patches[p]
            else:
                transformer_options["patches"] = patches
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["sigmas"] = timestep
        transformer_options["cond_mark"] = compute_cond_mark(cond_or_uncond=cond_or_uncond, sigmas=timestep)
        transformer_options["cond_indices"], transformer_options["uncond_indices"] = compute_cond_indices(cond_or_uncond=cond_or_uncond, sigmas=timestep)
        c["transformer_options"] = transformer_options
        if control is not None:
            p = control
            while p is not None:
                p.transformer_options = transformer_options
                p = p.previous_controlnet
            control_cond = c.copy()  # get_control may change items in this dict
            c["control"] = control.get_control(input_x, timestep_, control_cond, len(cond_or_uncond))
            c["control_model"] = control
        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](model.apply_model, {"input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond}).chunk(batch_chunks)
        else:
            output = model.apply_model(input_x, timestep_, **c).chunk(batch_chunks)
        del input_x
        for o in range(batch_chunks):
            a = area[o]
            if cond_or_uncond[o] == COND:
                out_cond[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += output[o] * mult[o]
                out_count[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += mult[o]
            else:
                out_uncond[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += output[o] * mult[o]
                out_uncond_count[:, :, a[2]:a[0] + a[2], a[3]:a[1] + a[3]] += mult[o]
    out_cond /= out_count
    out_uncond /= out_uncond_count
    return out_cond, out_uncond


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None, return_full=False):
    edit_strength = sum((item["strength"] if "strength" in item else 1) for item in cond)
    if math.isclose(cond_scale, 1.0) and model_options.get("disable_cfg1_optimization", False) == False:  # noqa: E712
        uncond_ = None
    else:
        uncond_ = uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        cfg_args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep, "input": x, "sigma": timestep,
                    "cond_denoised": cond_pred, "uncond_denoised": uncond_pred, "model": model, "model_options": model_options}
        cfg_result = x - model_options["sampler_cfg_function"](cfg_args)
    elif not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        cfg_result = fn({"denoised": cfg_result, "cond": cond, "uncond": uncond, "model": model, "uncond_denoised": uncond_pred, "cond_denoised": cond_pred,
                         "sigma": timestep, "model_options": model_options, "input": x})
    if return_full:
        return cfg_result, cond_pred, uncond_pred
    return cfg_result


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    model = unet_patcher.model
    control = unet_patcher.controlnet_linked_list
    extra_concat_condition = unet_patcher.extra_concat_condition
    x = denoiser_params.x
    timestep = denoiser_params.sigma
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    model_options = unet_patcher.model_options
    seed = self.p.seeds[0]
    image_cond_in = extra_concat_condition if extra_concat_condition is not None else denoiser_params.image_cond
    if isinstance(image_cond_in, torch.Tensor):
        if image_cond_in.shape[0] == x.shape[0] and image_cond_in.shape[2] == x.shape[2] and image_cond_in.shape[3] == x.shape[3]:
            if uncond is not None:
                for i in range(len(uncond)):
                    uncond[i]["model_conds"]["c_concat"] = Condition(image_cond_in)
            for i in range(len(cond)):
                cond[i]["model_conds"]["c_concat"] = Condition(image_cond_in)
    if control is not None:
        for h in cond:
            h["control"] = control
        if uncond is not None:
            for h in uncond:
                h["control"] = control
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(model, x, timestep, uncond, cond, cond_scale, model_options, seed)
    return sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed, return_full=True)


def sampling_prepare(unet, x):
    """:366, without the memory the ControlNets and online LoRAs ask to keep free beside the UNet's."""
    B, C, H, W = x.shape
    memory_estimation_function = unet.model_options.get("memory_peak_estimation_modifier", unet.memory_required)
    additional_model_patchers = [] if unet.controlnet_linked_list is None else unet.controlnet_linked_list.get_models()
    memory_management.load_models_gpu(models=[unet] + additional_model_patchers,
                                      memory_required=memory_estimation_function([B * 2, C, H, W]))
    real_model = unet.model
    for cnet in unet.list_controlnets():
        cnet.pre_run(real_model, lambda p: real_model.predictor.percent_to_sigma(p))


def sampling_cleanup(unet):
    for cnet in unet.list_controlnets():
        cnet.cleanup()
