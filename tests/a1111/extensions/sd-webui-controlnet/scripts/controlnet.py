"""Mirrors sd-webui-controlnet ``scripts/controlnet.py`` ``Script`` as far as the UNet hook goes: an
always-on script whose ``process`` (``controlnet_hack`` -> ``controlnet_main_entry``) builds one
``ControlParams`` per enabled unit, hooks IP-Adapter units into the attn2 layers, and hooks the
UNet with a new ``UnetHook`` kept as ``latest_network``; ``postprocess`` restores the UNet and
clears the IP-Adapter hacks. Units come from ``p.controlnet_units`` (the real script reads them
from its UI / API args): dicts with ``model`` (a PlugableControlModel, PlugableAdapter or
PlugableIPAdapter), ``module`` (the preprocessor name), ``hint`` [B, 3|4, H, W] in [0, 1],
``weight``, ``start``, ``end``, ``soft_injection`` / ``cfg_injection`` (the control modes
"My prompt is more important" / "ControlNet is more important"), ``threshold_a``."""

from modules import scripts

from .enums import ControlModelType
from .hook import ControlParams, UnetHook
from .ipadapter.plugable_ipadapter import PlugableIPAdapter, clear_all_ip_adapter


def model_type(unit):
    if unit["module"] in ("reference_only", "reference_adain+attn"):
        return ControlModelType.AttentionInjection
    if isinstance(unit["model"], PlugableIPAdapter):
        return ControlModelType.IPAdapter
    return {"PlugableAdapter": ControlModelType.T2I_Adapter}.get(type(unit["model"]).__name__, ControlModelType.ControlNet)


class Script(scripts.Script):
    def __init__(self):
        self.latest_network = None

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args, **kwargs):
        self.controlnet_hack(p)

    def controlnet_hack(self, p):
        units = [u for u in getattr(p, "controlnet_units", None) or [] if u.get("enabled", True)]
        if not units:
            return
        unet = p.sd_model.model.diffusion_model
        forward_params = []
        for unit in units:
            kind = model_type(unit)
            param = ControlParams(control_model=unit["model"], preprocessor={"name": unit["module"], "threshold_a": unit.get("threshold_a", 0.5)},
                                  hint_cond=unit["hint"], weight=unit.get("weight", 1.0), guidance_stopped=False,
                                  start_guidance_percent=unit.get("start", 0.0), stop_guidance_percent=unit.get("end", 1.0),
                                  advanced_weighting=None, control_model_type=kind, hr_hint_cond=unit.get("hr_hint"),
                                  global_average_pooling=False, soft_injection=unit.get("soft_injection", False),
                                  cfg_injection=unit.get("cfg_injection", False))
            if kind == ControlModelType.IPAdapter:
                layers = [m for name, m in unet.named_modules() if name.endswith("attn2")]
                unit["model"].hook(model=unet, attn2_layers=layers, weight=param.weight,
                                   start=param.start_guidance_percent, end=param.stop_guidance_percent)
            forward_params.append(param)
        self.latest_network = UnetHook(lowvram=False)
        self.latest_network.hook(model=unet, sd_ldm=p.sd_model, control_params=forward_params, process=p)

    def postprocess(self, p, processed, *args):
        clear_all_ip_adapter()
        if self.latest_network is None:
            return
        self.latest_network.restore()
        self.latest_network = None
