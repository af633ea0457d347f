"""Mirrors modules/script_callbacks.py: registration lists, the CFG denoiser callbacks with
their parameter objects, and ``infotext_pasted_callback`` (each callback may edit the parsed
parameters; one that raises is reported and the paste goes on)."""

from collections import defaultdict

from modules import errors

callback_map = defaultdict(list)


def _register(kind):
    def register(callback, *, name=None):
        callback_map[kind].append(callback)
    return register


on_ui_settings = _register("ui_settings")
on_before_ui = _register("before_ui")
on_script_unloaded = _register("script_unloaded")
on_infotext_pasted = _register("infotext_pasted")
on_cfg_denoiser = _register("cfg_denoiser")
on_cfg_denoised = _register("cfg_denoised")
on_cfg_after_cfg = _register("cfg_after_cfg")
on_model_loaded = _register("model_loaded")


def clear_callbacks():
    callback_map.clear()


def remove_callbacks_for_function(callback_func):
    for callbacks in callback_map.values():
        for callback in [c for c in callbacks if c == callback_func]:
            callbacks.remove(callback)


def run(kind, *args):
    for callback in callback_map[kind]:
        callback(*args)


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x, self.image_cond, self.sigma = x, image_cond, sigma
        self.sampling_step, self.total_sampling_steps = sampling_step, total_sampling_steps
        self.text_cond, self.text_uncond, self.denoiser = text_cond, text_uncond, denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x, self.sampling_step, self.total_sampling_steps, self.inner_model = x, sampling_step, total_sampling_steps, inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x, self.sampling_step, self.total_sampling_steps = x, sampling_step, total_sampling_steps


def infotext_pasted_callback(infotext, params):
    for callback in callback_map["infotext_pasted"]:
        try:
            callback(infotext, params)
        except Exception:
            errors.report(f"Error executing callback {callback} for infotext_pasted", exc_info=True)


def cfg_denoiser_callback(params):
    run("cfg_denoiser", params)


def cfg_denoised_callback(params):
    run("cfg_denoised", params)


def cfg_after_cfg_callback(params):
    run("cfg_after_cfg", params)
