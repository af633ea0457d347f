"""How A1111 runs the UNet for a guidance pass: ``sd_model.apply_model`` with the DDPM timestep
and the cond dict its CFG denoiser builds; the UNet input is z = x * c_in of the sampler's
k-diffusion wrapper (x itself for the timestep samplers)."""

from modules import shared

from ...core.recorder import Recorder
from ...core.zspace import unet_input_scale, unet_timestep
from .. import passes


def condition_dict(sd_model, crossattn, image_cond) -> dict:
    """The cond dict the WebUI's CFG denoiser passes to the UNet (its ``make_condition_dict``)."""
    if getattr(sd_model.model, "conditioning_key", None) == "crossattn-adm":
        return {"c_crossattn": [crossattn], "c_adm": image_cond}
    return {"c_crossattn": [crossattn], "c_concat": [image_cond]}


class SamplingPass(passes.SamplingPass):
    def recorder(self):
        return Recorder(shared.sd_model.model.diffusion_model)

    def guide(self, x, step, rows, sigma, cond, image_cond):
        inner = self.denoiser.inner_model
        sd_model = inner.inner_model
        t = unet_timestep(inner, sigma)

        def run_unet(z_rows, ids):
            images = [rows[k].image for k in ids]
            c = {k: v[ids] for k, v in cond.items()} if isinstance(cond, dict) else cond[ids]
            return sd_model.apply_model(z_rows, t[images], cond=condition_dict(sd_model, c, image_cond[images]))

        return self.guided.guide(x, step, rows, run_unet, unet_input_scale(inner, sigma))
