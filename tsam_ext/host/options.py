"""The "T-SAM" section of the WebUI's Settings tab."""

import gradio as gr

from modules import shared

from ..core.settings import BY_NAME, NAMES, Settings

SECTION = ("tsam", "T-SAM")


def _slider(name: str) -> dict:
    f = BY_NAME[name]
    return {"minimum": f.minimum, "maximum": f.maximum, "step": f.step}


def register() -> None:
    add = shared.opts.add_option
    info = shared.OptionInfo
    add("tsam_default_gamma", info(BY_NAME["gamma"].default, "Default gamma (temperature)", gr.Slider,
                                   _slider("gamma"), section=SECTION).needs_reload_ui())
    add("tsam_default_alpha", info(BY_NAME["alpha"].default, "Default alpha (step size)", gr.Slider,
                                   _slider("alpha"), section=SECTION).needs_reload_ui())
    add("tsam_default_guided_steps", info(BY_NAME["guided_steps"].default, "Default guided steps (% of sampling steps)",
                                          gr.Slider, _slider("guided_steps"), section=SECTION).needs_reload_ui())
    add("tsam_default_refine", info(BY_NAME["refine"].default, "Iterative refinement on by default (the reference "
                                    "method; off is faster)", section=SECTION).needs_reload_ui())
    add("tsam_default_diagnostics", info(False, "Diagnostics images on by default", section=SECTION).needs_reload_ui())
    add("tsam_save_diagnostics", info(False, "Save diagnostics images to the output folder", section=SECTION))
    add("tsam_console_trace", info(True, "Print the loss of every guided step to the console", section=SECTION))
    add("tsam_max_batch", info(0, "Images per guidance pass (0 = the whole batch; T-SAM halves it by itself on "
                               "out-of-memory)", gr.Slider, {"minimum": 0, "maximum": 16, "step": 1}, section=SECTION))
    add("tsam_checkpoint", info(False, "Guidance pass with activation checkpointing (less memory, slower, same result; "
                                "T-SAM switches to it by itself on out-of-memory)", section=SECTION))


def default(name: str):
    """The UI default of a setting: the Settings tab's value where it has one."""
    return getattr(shared.opts, f"tsam_default_{name}", BY_NAME[name].default)


def defaults() -> Settings:
    """Every setting's UI default, as the controls are built with them: what an argument not given
    means, whichever way the arguments came (UI, positional, dict)."""
    return Settings().updated(**{name: default(name) for name in NAMES})
