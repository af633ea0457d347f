"""How Forge runs the UNet for a guidance pass.

Forge's CFG denoiser no longer calls a k-diffusion model wrapper: ``sampling_function`` batches
[uncond, cond] itself and calls ``KModel.apply_model(x, sigma, c_crossattn=..[, y=..])`` of
``sd_model.forge_objects.unet`` (backend/modules/k_model.py), which feeds the UNet
z = predictor.calculate_input(sigma, x). The guidance pass calls the same ``apply_model`` on the
cond rows only (so neither the batch order nor CFG 1's skipped uncond matters), with the
transformer options the patcher holds for this pass. DDIM, PLMS and UniPC hand the denoiser a
timestep as ``sigma`` and their own x, which Forge rescales to the k-diffusion x of that
timestep's sigma first (``classic_ddim_eps_estimation``): for them z = x.

The pass runs inside the sampler's ``torch.inference_mode``: the guidance itself runs in
``autograd.trainable`` on a normal copy of x, and the result goes back into the sampler's own
(inference) x in place, in inference mode, where Forge allows it.
"""

import torch

from backend.sampling.sampling_function import compute_cond_indices, compute_cond_mark

from ...core.recorder import Recorder
from .. import sampling_pass
from .autograd import trainable

COND = 0  # Forge's mark of a conditional row (sampling_function.py: COND = 0, UNCOND = 1)


def k_sigma(denoiser, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma [B], x_scale [B, 1, 1, 1]) of the UNet call: the k-diffusion sigma and the factor
    that turns the sampler's x into the k-diffusion x. A timestep sampler's timestep is mapped to
    its sigma and its x scaled as Forge's ``CFGDenoiser.forward`` does; other samplers pass both."""
    if not getattr(denoiser, "classic_ddim_eps_estimation", False):
        return sigma.float(), torch.ones(sigma.shape[0], 1, 1, 1, device=sigma.device)
    alphas_cumprod = denoiser.inner_model.inner_model.alphas_cumprod
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    real = sigmas[sigma.round().long().clip(0, sigmas.shape[0] - 1)].float()
    return real, (real ** 2 + 1).sqrt().reshape(-1, 1, 1, 1)


def transformer_options(patcher, sigmas: torch.Tensor) -> dict:
    """The transformer options ``sampling_function`` gives a batch of conditional rows: the
    patcher's own (other extensions' attention patches included) with the cond marks."""
    options = dict(patcher.model_options.get("transformer_options", {}))
    options["cond_or_uncond"] = [COND]
    options["sigmas"] = sigmas
    options["cond_mark"] = compute_cond_mark(cond_or_uncond=[COND], sigmas=sigmas)
    options["cond_indices"], options["uncond_indices"] = compute_cond_indices(cond_or_uncond=[COND], sigmas=sigmas)
    return options


def unet_conds(cond, ids: list[int]) -> dict:
    """The text conds of rows ``ids`` as ``KModel.apply_model`` takes them (backend/sampling/
    condition.py): SD 1.x / 2.x's cond tensor [B, S, D] as ``c_crossattn``; SDXL's dict as
    ``c_crossattn`` = its ``crossattn`` [B, S, 2048] and ``y`` = its ``vector`` [B, 2816]."""
    if isinstance(cond, dict):
        return {"c_crossattn": cond["crossattn"][ids], "y": cond["vector"][ids]}
    return {"c_crossattn": cond[ids]}


class SamplingPass(sampling_pass.SamplingPass):
    def patcher(self):
        """The UnetPatcher of this sampling pass (what ``sampling_function`` samples with)."""
        return self.denoiser.inner_model.inner_model.forge_objects.unet

    def recorder_for(self, sd_model):
        return Recorder(sd_model.forge_objects.unet.model.diffusion_model)

    def guide(self, x, step, rows, sigma, cond, image_cond):
        patcher = self.patcher()
        model = patcher.model
        concat = patcher.extra_concat_condition if patcher.extra_concat_condition is not None else image_cond
        if not (isinstance(concat, torch.Tensor) and concat.shape[0] == x.shape[0] and concat.shape[2:] == x.shape[2:]):
            concat = None  # sampling_function's rule: only an inpainting model's image cond matches x
        with trainable(model.diffusion_model):
            s, x_scale = k_sigma(self.denoiser, sigma)
            c_in = model.predictor.calculate_input(s, torch.ones_like(x_scale))  # z = c_in * x_k

            def run_unet(z_rows, ids):
                images = [rows[k].image for k in ids]
                return model.apply_model(z_rows / c_in[images], s[images], c_concat=None if concat is None else concat[images],
                                         transformer_options=transformer_options(patcher, s[images]), **unet_conds(cond, ids))

            work = x.clone()
            outcome = self.guided.guide(work, step, rows, run_unet, c_in * x_scale)
        if outcome is not None:
            x.copy_(work)  # back in the sampler's inference mode, where its latent may change in place
        return outcome
