"""How Forge runs the UNet for a guidance pass.

Forge's CFG denoiser no longer calls a k-diffusion model wrapper: ``sampling_function`` batches
[uncond, cond] itself, with every patch, ControlNet, wrapper and modifier of the generation, and
calls ``KModel.apply_model(x, sigma, ...)`` of ``sd_model.forge_objects.unet``
(backend/modules/k_model.py), which feeds the UNet z = predictor.calculate_input(sigma, x). The
guidance pass is that call for the cond rows only (``unet_call``; so neither the batch order nor
CFG 1's skipped uncond matters), with the ControlNets' state kept for the sampler's calls
(``controlnet.rows``). DDIM, PLMS and UniPC hand the denoiser a timestep as ``sigma`` and their
own x, which Forge rescales to the k-diffusion x of that timestep's sigma first
(``classic_ddim_eps_estimation``): for them z = x. When inpainting, Forge's denoiser blends
before the UNet for every sampler (x * nmask + the original latent, noised with a fresh draw,
* mask): the pass sees that blend, drawn from the same generator state (the pass runs in
``fork_rng`` before the denoiser draws), so its gradient carries the mask and the kept region
does not move.

The pass runs inside the sampler's ``torch.inference_mode``: the guidance itself runs in
``autograd.trainable`` (the UNet and the ControlNets) on a normal copy of x, and the result goes
back into the sampler's own (inference) x in place, in inference mode, where Forge allows it.
"""

import torch
from backend.sampling.sampling_function import sampling_prepare

from ...core.recorder import Recorder
from .. import sampling_pass
from ..foreign import describe, replaced_forwards
from . import controlnet, unet_call
from .autograd import trainable


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


def noisy_initial_latent(denoiser, sigma: torch.Tensor, batch: int) -> torch.Tensor:
    """The original latent [B, C, h, w] noised to ``sigma`` [B] as Forge's ``CFGDenoiser.forward``
    noises it for the inpainting blend (one draw from the global generator)."""
    init = denoiser.init_latent
    predictor = denoiser.inner_model.inner_model.forge_objects.unet.model.predictor
    noisy = predictor.noise_scaling(sigma[:, None, None, None], torch.randn_like(init).to(init), init, max_denoise=False)
    return sampling_pass.per_image(noisy, batch)


class SamplingPass(sampling_pass.SamplingPass):
    def patcher(self):
        """The UnetPatcher of this sampling pass (what ``sampling_function`` samples with)."""
        return self.denoiser.inner_model.inner_model.forge_objects.unet

    def resume_sampling(self, x):
        """Loading the refiner's text encoder for T may have unloaded its UNet and ControlNets
        (``free_memory`` unloads every model not kept: always under --always-offload-from-vram,
        else when VRAM is short), and Forge's sampling would then meet them on the CPU: load them
        back as ``apply_refiner`` does after its own text pass."""
        sampling_prepare(self.patcher(), x=x)

    def recorder_for(self, sd_model):
        return Recorder(sd_model.forge_objects.unet.model.diffusion_model)

    def guide(self, x, step, rows, sigma, cond, image_cond):
        patcher = self.patcher()
        model = patcher.model
        batch = x.shape[0]
        s, x_scale = k_sigma(self.denoiser, sigma)
        c_in = model.predictor.calculate_input(s, torch.ones_like(x_scale))  # z = c_in * x_k
        concat = unet_call.concat_condition(patcher, image_cond, batch, x.shape[2:])
        masked = getattr(self.denoiser, "mask", None) is not None
        with trainable(model.diffusion_model, *controlnet.models(patcher)):
            if masked:
                noisy = noisy_initial_latent(self.denoiser, s, batch)
                nmask, mask = sampling_pass.per_image(self.denoiser.nmask, batch), sampling_pass.per_image(self.denoiser.mask, batch)

            def run_unet(z_rows, ids):
                images = [rows[k].image for k in ids]
                x_rows = z_rows / c_in[images]
                if masked:
                    x_rows = x_rows * nmask[images] + noisy[images] * mask[images]
                with controlnet.rows(patcher, images, batch):
                    return unet_call.cond_prediction(self.denoiser, x_rows, s[images], unet_call.text_rows(cond, ids),
                                                     None if concat is None else concat[images])

            self.guided.explain = lambda: describe(replaced_forwards(model.diffusion_model, self.patches(patcher)))
            work = x.clone()
            outcome = self.guided.guide(work, step, rows, run_unet, c_in * x_scale)
        if outcome is not None:
            x.copy_(work)  # back in the sampler's inference mode, where its latent may change in place
        return outcome

    @staticmethod
    def patches(patcher) -> list:
        """The callables other extensions put into Forge's UNet call: modifiers, wrappers,
        attention and block patches (named when they cut the maps or the gradient)."""
        options = patcher.model_options
        transformer = options.get("transformer_options", {})
        found = list(options.get("conditioning_modifiers", [])) + list(options.get("sampler_pre_cfg_function", []))
        found += [options["model_function_wrapper"]] if "model_function_wrapper" in options else []
        found += list(transformer.get("block_modifiers", []))
        for kind in transformer.get("patches_replace", {}).values():
            found += list(kind.values())
        for patch in transformer.get("patches", {}).values():
            found += list(patch)
        return found
