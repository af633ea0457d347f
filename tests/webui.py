"""Test helpers for the WebUI adapter: the A1111 stand-in (tests/a1111) on sys.path, k-diffusion's
real samplers registered as ``k_diffusion``, a stand-in ``sd_model`` over the real architectures,
and scripts/tsam.py loaded the way the WebUI loads an extension's script."""

import copy
import importlib.util
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "a1111"))

from tsam_ext.runtime import kdiffusion# noqa: E402

kdiffusion.load()

from modules import processing, script_callbacks, scripts, sd_hijack, shared  # noqa: E402
import standin_model  # noqa: E402


def load_script_module():
    """Import scripts/tsam.py as the WebUI does (module named after the file, not in sys.modules)."""
    path = os.path.join(ROOT, "scripts", "tsam.py")
    spec = importlib.util.spec_from_file_location("tsam.py", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ROOT)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(ROOT)
    return module


def make_sd_model(runtime_model):
    """The WebUI's model of the runtime model's family, over a copy of its modules."""
    rt = copy.deepcopy(runtime_model)
    return {"sd1": standin_model.sd1_model, "sd2": standin_model.sd2_model, "sdxl": standin_model.sdxl_model}[rt.family](rt)


class WebUI:
    """One txt2img and one img2img runner with T-SAM loaded; ``generate`` runs ``process_images``."""

    def __init__(self, sd_model):
        shared.sd_model = sd_model
        script_callbacks.clear_callbacks()
        self.module = load_script_module()
        self.txt2img = scripts.ScriptRunner([self.module.Script], is_img2img=False)
        self.img2img = scripts.ScriptRunner([self.module.Script], is_img2img=True)
        import gradio as gr
        for runner in (self.txt2img, self.img2img):
            with gr.Blocks():
                runner.setup_ui()

    def runner(self, extra=(), img2img=False):
        """A script runner with the other extensions' Script classes ``extra`` loaded before T-SAM."""
        import gradio as gr
        runner = scripts.ScriptRunner([*extra, self.module.Script], is_img2img=img2img)
        with gr.Blocks():
            runner.setup_ui()
        return runner

    def args(self, runner, **values):
        """Script args: the UI defaults with ``values`` (settings names) set."""
        from tsam_ext.core.settings import NAMES
        script = next(s for s in runner.scripts if s.title() == "T-SAM")
        args = runner.default_args()
        for name, value in values.items():
            args[script.args_from + NAMES.index(name)] = value
        return args

    def generate(self, tsam=None, img2img=False, raw_args=None, runner=None, p_attrs=None, **kwargs):
        runner = runner or (self.img2img if img2img else self.txt2img)
        args = raw_args if raw_args is not None else self.args(runner, **(tsam or {}))
        defaults = dict(prompt="a black car and a white clock", seed=1, steps=6, width=128, height=128,
                        sampler_name="Euler", cfg_scale=7.0)
        defaults.update(kwargs)
        cls = processing.StableDiffusionProcessingImg2Img if img2img else processing.StableDiffusionProcessingTxt2Img
        p = cls(script_args=args, scripts_runner=runner, **defaults)
        for name, value in (p_attrs or {}).items():  # what other extensions read from p (their UI's values)
            setattr(p, name, value)
        return p, processing.process_images(p)


def load_extension(name: str):
    """An extension's stand-in package (tests/a1111/extensions/<name>/scripts) under the name
    ``<name>`` with dashes as underscores, its modules importable as ``<that>.<module>``."""
    import types
    package = name.replace("-", "_")
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(ROOT, "tests", "a1111", "extensions", name, "scripts")]
        sys.modules[package] = module
    return sys.modules[package]


def reset_state():
    shared.state.reset()
    sd_hijack.model_hijack.fixes = None
    for cache in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
        setattr(processing.StableDiffusionProcessing, cache, [None, None])
    torch.manual_seed(0)
