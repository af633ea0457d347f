"""How A1111 runs the UNet for a guidance pass: ``sd_model.apply_model`` with the DDPM timestep
and the cond dict its CFG denoiser builds; the UNet input is z = x * c_in of the sampler's
k-diffusion wrapper (x itself for the timestep samplers)."""

from modules import shared
from modules.hypernetworks import hypernetwork

from ...core.recorder import Recorder
from ...core.zspace import unet_input_scale, unet_timestep
from .. import sampling_pass


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


class SamplingPass(sampling_pass.SamplingPass):
    def recorder_for(self, sd_model):
        return recorder_for(sd_model)

    def guide(self, x, step, rows, sigma, cond, image_cond):
        inner = self.denoiser.inner_model
        sd_model = inner.inner_model
        t = unet_timestep(inner, sigma)

        def run_unet(z_rows, ids):
            images = [rows[k].image for k in ids]
            c = {k: v[ids] for k, v in cond.items()} if isinstance(cond, dict) else cond[ids]
            return sd_model.apply_model(z_rows, t[images], cond=condition_dict(sd_model, c, image_cond[images]))

        return self.guided.guide(x, step, rows, run_unet, unet_input_scale(inner, sigma))
