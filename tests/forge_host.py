"""The Forge stand-in (tests/forge) in the same pytest process as the A1111 one (tests/a1111).

Both are packages named ``modules``, and ``tsam_ext.host`` binds whichever it was imported with.
``ForgeHost`` is a scope that puts the A1111 modules aside: inside it ``modules``, ``backend``,
``modules_forge`` and ``tsam_ext.host`` are imported afresh from the Forge stand-in (Forge's own
k_diffusion samplers are added to the real ``k_diffusion.sampling``); leaving it removes them and
puts everything back as it was. ``ForgeWebUI`` is the Forge counterpart of webui.WebUI: a model
loaded the way Forge loads it (every weight an inference tensor), T-SAM's Script, and generation
through the stand-in's ``process_images``."""

import importlib
import os
import sys

import torch

import tsam_ext
import webui

FORGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
A1111 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "a1111")
OWNED = ("modules", "modules_forge", "backend", "scripts", "reuse", "sd_forge_lora", "k_diffusion_forge", "tsam_ext.host")


def _owned(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in OWNED)


class ForgeHost:
    def __enter__(self):
        self.saved = {k: v for k, v in sys.modules.items() if _owned(k)}
        self.path = list(sys.path)
        self.host = getattr(tsam_ext, "host", None)
        for k in self.saved:
            del sys.modules[k]
        sys.path[:] = [FORGE] + [p for p in sys.path if os.path.abspath(p) != A1111]
        importlib.import_module("k_diffusion_forge").install()
        return self

    def __exit__(self, *exc):
        sys.modules["k_diffusion_forge"].uninstall()
        for k in [k for k in sys.modules if _owned(k)]:
            del sys.modules[k]
        sys.modules.update(self.saved)
        sys.path[:] = self.path
        if self.host is not None:
            tsam_ext.host = self.host
        return False


class ForgeWebUI:
    """T-SAM's Script in the Forge stand-in with one checkpoint selected (``load``)."""

    def __init__(self, checkpoint):
        from modules import extra_networks, script_callbacks, scripts, sd_models
        import sd_forge_lora

        self.sd_models = sd_models
        self.load("random-sd15", checkpoint)
        script_callbacks.clear_callbacks()
        extra_networks.register_extra_network(sd_forge_lora.ExtraNetworkLora())
        self.module = webui.load_script_module()
        self.txt2img = scripts.ScriptRunner([self.module.Script], is_img2img=False)
        self.img2img = scripts.ScriptRunner([self.module.Script], is_img2img=True)
        import gradio as gr
        for runner in (self.txt2img, self.img2img):
            with gr.Blocks():
                runner.setup_ui()

    def load(self, name, checkpoint):
        """Select a checkpoint: the next generation reloads the model, as Forge does on a switch."""
        self.sd_models.checkpoint_change(self.sd_models.CheckpointInfo(name, checkpoint))

    @property
    def model(self):
        return self.sd_models.forge_model_reload()[0]

    def generate(self, tsam=None, img2img=False, raw_args=None, runner=None, **kwargs):
        from modules import processing, shared
        from tsam_ext.core.settings import NAMES

        runner = runner or (self.img2img if img2img else self.txt2img)
        args = raw_args if raw_args is not None else runner.default_args()
        if raw_args is None and runner.scripts:
            for name, value in (tsam or {}).items():
                args[runner.scripts[0].args_from + NAMES.index(name)] = value
        defaults = dict(prompt="a black car and a white clock", seed=1, steps=6, width=128, height=128,
                        sampler_name="Euler", cfg_scale=7.0)
        defaults.update(kwargs)
        cls = processing.StableDiffusionProcessingImg2Img if img2img else processing.StableDiffusionProcessingTxt2Img
        p = cls(script_args=args, scripts_runner=runner, **defaults)
        shared.state.reset()
        for cache in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            setattr(processing.StableDiffusionProcessing, cache, [None, None])
        torch.manual_seed(0)
        return p, processing.process_images(p)

    def bare(self, **kwargs):
        """The same generation with T-SAM not installed at all."""
        from modules import scripts
        return self.generate(runner=scripts.ScriptRunner([], is_img2img=kwargs.get("img2img", False)), raw_args=[0], **kwargs)
