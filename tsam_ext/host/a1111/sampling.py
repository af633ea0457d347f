"""How A1111 runs the UNet for a guidance pass: ``sd_model.apply_model`` with the DDPM timestep
and the cond dict its CFG denoiser builds; the UNet input is z = x * c_in of the sampler's
k-diffusion wrapper (x itself for the timestep samplers).

The pass is the call sampling makes: the same ``apply_model``, so whatever hooks the UNet
(ControlNet's forward, through ``controlnet.guidance_pass``) runs in it; and, when inpainting, the
latent the UNet sees: the timestep samplers blend the original latent in before the UNet
(``mask_before_denoising``), so the pass blends too (``blended``: the gradient then carries the
mask); the k-diffusion samplers blend after it, so the pass sees x and the step leaves the kept
region where it is (``movable``).
"""

import torch

from modules import scripts, shared
from modules.hypernetworks import hypernetwork

from ...core.recorder import Recorder
from ...core.zspace import unet_input_scale, unet_timestep
from .. import sampling_pass
from ..foreign import describe, replaced_forwards
from . import controlnet


def condition_dict(sd_model, crossattn, image_cond) -> dict:
    """The cond dict the WebUI's CFG denoiser passes to the UNet (its ``make_condition_dict``);
    SDXL's text cond is itself a dict (``crossattn``, ``vector``) that the UNet dict extends."""
    if getattr(sd_model.model, "conditioning_key", None) == "crossattn-adm":
        return {"c_crossattn": [crossattn], "c_adm": image_cond}
    if isinstance(crossattn, dict):
        return {**crossattn, "c_concat": [image_cond]}
    return {"c_crossattn": [crossattn], "c_concat": [image_cond]}


WEBUI_KERNELS = ("modules.sd_hijack_optimizations", "modules.hypernetworks.hypernetwork")


def hypernetwork_contexts(_layer, context):
    """The texts (k, v) a layer reads: every A1111 attention kernel first passes the context
    through the loaded hypernetworks (k and v each through their own modules)."""
    return hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)


def webui_kernel(layer) -> bool:
    """The layer runs one of the WebUI's own attention kernels (the class-level optimisation),
    not another extension's forward: the guidance pass may run it as torch's fused attention."""
    return "forward" not in vars(layer) and getattr(type(layer).forward, "__module__", None) in WEBUI_KERNELS


def recorder_for(sd_model) -> Recorder:
    """The recorder of this model's UNet, reading each layer's text as the WebUI's kernels do."""
    return Recorder(sd_model.model.diffusion_model, contexts=hypernetwork_contexts, fusable=webui_kernel)


def blended(denoiser, p, x: torch.Tensor, sigma: torch.Tensor, images: list[int], batch: int) -> torch.Tensor:
    """The latent [k, C, h, w] the UNet sees for the rows ``x`` of ``images`` (of a batch of
    ``batch``) when the CFG denoiser blends before it: x * nmask + init_latent * mask, then the
    scripts' ``on_mask_blend`` (soft inpainting), as ``CFGDenoiser.forward``'s ``apply_blend``
    does (modules/sd_samplers_cfg_denoiser.py)."""
    nmask, mask = sampling_pass.per_image(denoiser.nmask, batch)[images], sampling_pass.per_image(denoiser.mask, batch)[images]
    init = sampling_pass.per_image(denoiser.init_latent, batch)[images]
    out = x * nmask + init * mask
    if p.scripts is not None:
        args = scripts.MaskBlendArgs(x, nmask, init, mask, out, denoiser=denoiser, sigma=sigma[images])
        p.scripts.on_mask_blend(p, args)
        out = args.blended_latent
    return out


class SamplingPass(sampling_pass.SamplingPass):
    def recorder_for(self, sd_model):
        return recorder_for(sd_model)

    def guide(self, x, step, rows, sigma, cond, image_cond):
        inner = self.denoiser.inner_model
        sd_model = inner.inner_model
        unet = sd_model.model.diffusion_model
        t = unet_timestep(inner, sigma)
        c_in = unet_input_scale(inner, sigma).to(x.device)
        masked = getattr(self.denoiser, "mask", None) is not None
        blend_first = masked and self.denoiser.mask_before_denoising

        def run_unet(z_rows, ids):
            images = [rows[k].image for k in ids]
            if blend_first:
                z_rows = blended(self.denoiser, self.p, z_rows / c_in[images], sigma, images, x.shape[0]) * c_in[images]
            c = {k: v[ids] for k, v in cond.items()} if isinstance(cond, dict) else cond[ids]
            return sd_model.apply_model(z_rows, t[images], cond=condition_dict(sd_model, c, image_cond[images]))

        self.guided.explain = lambda: describe(replaced_forwards(unet))
        movable = sampling_pass.per_image(self.denoiser.nmask, x.shape[0]) if masked and not blend_first else None
        with controlnet.guidance_pass(self.p, unet):
            return self.guided.guide(x, step, rows, run_unet, c_in, movable)
