"""The UNet call Forge's sampling makes, for the rows a guidance pass guides. Follows
backend/sampling/sampling_function.py (Forge dfdcbab6): ``sampling_function`` and
``sampling_function_inner`` up to ``calc_cond_uncond_batch``, which is called itself.

``sampling_function`` prepares the conds of a CFG step before the batch runs: an inpainting
model's concat condition, the patcher's ControlNet list on every cond, then each
``conditioning_modifiers`` entry (reference-only fills its banks there; others change the
model, the latent or the conds) and, in ``sampling_function_inner``, each
``sampler_pre_cfg_function`` (ControlNet's inpaint_only blends the latent there).
``calc_cond_uncond_batch`` then runs the batch as sampling does: the transformer options with
the cond marks, the ControlNets' residuals from ``get_control``, and ``model_function_wrapper``
around ``KModel.apply_model``. The pass does exactly that for its cond rows only, with no
uncond rows (an empty list: what ``calc_cond_uncond_batch`` runs at CFG 1, and what a modifier
that walks the unconds can walk), so every patch, wrapper and modifier of the generation is in
the guidance pass; only the CFG combination after the batch is left out.
"""

import torch

from backend.sampling.condition import Condition, compile_conditions
from backend.sampling.sampling_function import calc_cond_uncond_batch


def concat_condition(patcher, image_cond, batch: int, latent_hw) -> torch.Tensor | None:
    """The concat condition [B, C', h, w] sampling gives the UNet, or None: the patcher's
    ``extra_concat_condition``, else the sampler's image cond, when it matches the latent batch
    and size (``sampling_function``'s rule: only an inpainting model's does)."""
    concat = patcher.extra_concat_condition if patcher.extra_concat_condition is not None else image_cond
    if isinstance(concat, torch.Tensor) and concat.shape[0] == batch and tuple(concat.shape[2:]) == tuple(latent_hw):
        return concat
    return None


def text_rows(cond, ids: list[int]):
    """The text conds of rows ``ids``: SD 1.x / 2.x's tensor [B, S, D], or SDXL's dict of
    ``crossattn`` [B, S, 2048] and ``vector`` [B, 2816]."""
    if isinstance(cond, dict):
        return {k: v[ids] for k, v in cond.items() if isinstance(v, torch.Tensor)}
    return cond[ids]


def cond_prediction(denoiser, x: torch.Tensor, sigma: torch.Tensor, text, concat: torch.Tensor | None) -> torch.Tensor:
    """Forge's denoised prediction [k, C, h, w] of the cond rows: ``x`` [k, C, h, w] the
    k-diffusion latent of the rows, ``sigma`` [k], ``text`` their conds (``text_rows``),
    ``concat`` their concat condition or None."""
    unet_patcher = denoiser.inner_model.inner_model.forge_objects.unet
    model, model_options = unet_patcher.model, unet_patcher.model_options
    cond = compile_conditions(text)
    if concat is not None:
        cond[0]["model_conds"]["c_concat"] = Condition(concat)
    if unet_patcher.controlnet_linked_list is not None:
        cond[0]["control"] = unet_patcher.controlnet_linked_list
    uncond, seed, timestep = [], denoiser.p.seeds[0], sigma
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, _scale, model_options, seed = modifier(model, x, timestep, uncond, cond, 1.0, model_options, seed)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond, x, timestep, model_options = fn(model, cond, uncond, x, timestep, model_options)
    return calc_cond_uncond_batch(model, cond, uncond, x, timestep, model_options)[0]
