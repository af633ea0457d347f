"""Mirrors backend/sampling/sampling_function.py: ``sampling_function`` / ``_inner`` /
``calc_cond_uncond_batch`` and their helpers, as they run for text conds without areas, masks or
ControlNet.

Each AND sub-prompt slot j is one cond entry over the whole latent batch, weighted by its last
image's weight (``compile_weighted_conditions``); the uncond is one more entry, dropped at CFG 1
(unless ``disable_cfg1_optimization``). The entries are popped from the end, so the UNet batch is
[uncond, cond ...] (``cond_or_uncond`` = [1, 0, ...]); conds of different token lengths are
repeated to a common multiple (``ConditionCrossAttn.concat``). Cond outputs are averaged and
CFG is ``uncond + (cond - uncond) * cond_scale * sum(weights)``. SDXL's dict conds
(``compile_conditions``) give each entry its ``crossattn`` and, as ``y``, its ``vector``."""

import math

import torch

COND, UNCOND = 0, 1


def compute_cond_mark(cond_or_uncond, sigmas):
    return torch.Tensor([c for c in cond_or_uncond for _ in range(int(sigmas.shape[0]))]).to(sigmas)


def compute_cond_indices(cond_or_uncond, sigmas):
    size, cond, uncond = int(sigmas.shape[0]), [], []
    for i, c in enumerate(cond_or_uncond):
        (cond if c == COND else uncond).extend(range(i * size, (i + 1) * size))
    return cond, uncond


def compile_conditions(cond):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return [{"cross_attn": cond}]
    return [{"cross_attn": cond["crossattn"], "y": cond["vector"]}]


def compile_weighted_conditions(cond, weights):
    entries = []
    for slot in map(list, zip(*weights)):
        rows = [i for i, _w in slot]
        feed = {k: v[rows] for k, v in cond.items()} if isinstance(cond, dict) else cond[rows]
        entry = compile_conditions(feed)[0]
        entry["strength"] = slot[-1][1]
        entries.append(entry)
    return entries


def _concat(tensors):
    length = math.lcm(*(t.shape[1] for t in tensors))
    return torch.cat([t.repeat(1, length // t.shape[1], 1) for t in tensors])


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    to_run = [(c, COND) for c in cond] + ([(c, UNCOND) for c in uncond] if uncond is not None else [])
    out = {COND: torch.zeros_like(x_in), UNCOND: torch.zeros_like(x_in)}
    count = {COND: torch.ones_like(x_in) * 1e-37, UNCOND: torch.ones_like(x_in) * 1e-37}
    batch = [to_run.pop(i) for i in reversed(range(len(to_run)))]
    cond_or_uncond = [kind for _c, kind in batch]
    options = dict(model_options.get("transformer_options", {}))
    options["cond_or_uncond"] = cond_or_uncond[:]
    options["sigmas"] = timestep
    options["cond_mark"] = compute_cond_mark(cond_or_uncond, timestep)
    options["cond_indices"], options["uncond_indices"] = compute_cond_indices(cond_or_uncond, timestep)
    extra = {"y": torch.cat([c["y"] for c, _kind in batch])} if "y" in batch[0][0] else {}
    output = model.apply_model(torch.cat([x_in] * len(batch)), torch.cat([timestep] * len(batch)),
                               c_crossattn=_concat([c["cross_attn"] for c, _kind in batch]),
                               transformer_options=options, **extra).chunk(len(batch))
    for o, kind in zip(output, cond_or_uncond):
        out[kind] += o
        count[kind] += 1
    return out[COND] / count[COND], out[UNCOND] / count[UNCOND]


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None, return_full=False):
    edit_strength = sum(c.get("strength", 1) for c in cond)
    uncond_ = None if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False) else uncond
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if not math.isclose(edit_strength, 1.0):
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    return (result, cond_pred, uncond_pred) if return_full else result


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    return sampling_function_inner(unet_patcher.model, denoiser_params.x, denoiser_params.sigma, uncond, cond, cond_scale,
                                   unet_patcher.model_options, self.p.seeds[0], return_full=True)


def sampling_prepare(unet, x):
    from backend import memory_management
    memory_management.load_models_gpu([unet])


def sampling_cleanup(unet):
    pass
