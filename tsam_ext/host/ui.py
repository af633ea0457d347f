"""The "T-SAM" accordion of txt2img and img2img (gradio 3.41, the WebUI's InputAccordion).

The header checkbox is the enable switch. Visible: gamma, alpha, guided steps, with a live
line saying which sampling steps that means; advanced settings sit in a collapsed accordion.
``build`` returns the controls in ``settings.NAMES`` order: that order is the API's.
"""

import html
import json

import gradio as gr

from modules.ui_components import FormRow, InputAccordion

from ..core import infotext
from ..core.schedule import PassSteps
from ..core.settings import BY_NAME, NAMES, gamma_order_matters
from . import step_plan
from .options import default


def _slider(name: str, elem_id, **kwargs) -> gr.Slider:
    f = BY_NAME[name]
    return gr.Slider(minimum=f.minimum, maximum=f.maximum, step=f.step, value=default(name), label=f.label,
                     elem_id=elem_id(name), **kwargs)


def _checkbox(name: str, elem_id, **kwargs) -> gr.Checkbox:
    return gr.Checkbox(value=default(name), label=BY_NAME[name].label, elem_id=elem_id(name), **kwargs)


def _radio(name: str, elem_id, **kwargs) -> gr.Radio:
    f = BY_NAME[name]
    return gr.Radio(choices=list(f.choices), value=default(name), label=f.label, elem_id=elem_id(name), **kwargs)


class PasteKey(str):
    """A control's key among the WebUI's paste fields that also reads the control's value.

    A1111 1.10.1 copies a control from tab to tab ("Send to img2img") only if its key is a string
    named in the script's ``paste_field_names`` (infotext_utils.connect_paste_params_buttons),
    while pasting parameters (the paste button, PNG Info, the API's ``infotext`` field) sets a
    callable key's result (connect_paste, Api.apply_infotext): this key is both, so every control
    does both. The string is the setting's infotext key ("T-SAM enabled" / "T-SAM refine" for the
    two that have none of their own)."""

    def __new__(cls, name: str):
        key = super().__new__(cls, infotext.KEYS.get(name, f"T-SAM {name}"))
        key.name = name
        return key

    def __call__(self, params: dict):
        """The control's value from parsed parameters, or None (leave the control as it is)."""
        return infotext.read(params).get(self.name)


def gamma_order_shown(loss: str) -> dict:
    """The gamma order control under ``loss``: shown only where it is used. Hidden, it goes back to
    the order the reference loss uses, so the preview of T shows the T that is used."""
    return gr.update(visible=True) if gamma_order_matters(loss) else gr.update(visible=False, value="reference")


def refinement_editable(refine: bool) -> list[dict]:
    """Refinement's own controls (iterations, early stop) greyed out while refinement is off."""
    return [gr.update(interactive=bool(refine))] * 2


def intro(elem_id) -> str:
    """The accordion's first line; it carries every control's tooltip for javascript/tsam.js."""
    tooltips = {elem_id(name): BY_NAME[name].help for name in NAMES[1:]}
    return ("<p class='tsam-intro tsam-tooltips' data-tooltips=\"" + html.escape(json.dumps(tooltips), quote=True) + "\">"
            "Keeps every object of the prompt and binds each attribute to its noun, by steering the image with the "
            "text encoder's own attention (<a href='https://arxiv.org/abs/2411.15236' target='_blank'>T-SAM, "
            "CVPR 2025</a>). Hover a control for what it does.</p>")


def _numbers(steps) -> str:
    """0-based steps as 1-based ranges: (0, 1, 2, 5) -> "1-3, 6"."""
    runs = []
    for step in steps:
        if runs and step == runs[-1][1] + 1:
            runs[-1][1] = step
        else:
            runs.append([step, step])
    return ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def steps_hint(percent, refine, steps=20, sampling=None, scheduler=None, denoising_strength=None) -> str:
    """Which sampling steps T-SAM guides and refines for the tab's sampler, steps, schedule type
    and (img2img) denoising strength: the plan the guided pass makes, worked out beforehand."""
    steps, percent = int(steps or 0), int(percent or 0)
    try:
        made = step_plan.plan_for(sampling, steps, scheduler, denoising_strength, percent / 100, bool(refine))
    except Exception as e:  # noqa: BLE001 - a hint must never break the page
        made, failure = None, f" ({type(e).__name__}: {e})"
    else:
        failure = ""
    if made is None:
        return f"<span class='tsam-hint'>Guides the first {percent}% of the sampling steps{failure}.</span>"
    plan, run = made
    if denoising_strength is not None:
        of = f"the {plan.steps} steps img2img runs at denoising {float(denoising_strength):g}"
    elif plan.steps != steps:
        of = f"the {plan.steps} steps {sampling or 'the sampler'} runs for {steps}"
    else:
        of = f"{plan.steps}"
    text = f"Guides steps {_numbers(plan.guided)} of {of}" if plan.guided else f"Guides none of {of} steps"
    renoised = run.first_visits().count(False) if isinstance(run, PassSteps) else 0
    if renoised:
        text += f" (not its {renoised} restart steps, which add noise back)"
    if plan.refine_at:
        text += "; refines at step " + ", ".join(str(s + 1) for s in sorted(plan.refine_at))
    return f"<span class='tsam-hint'>{text}.</span>"


class Links:
    """Events between the tab's own components (its sampler, schedule type, steps, img2img's
    denoising strength, prompt box) and T-SAM's controls, each wired once, as soon as both ends
    exist: the WebUI may build either first, and the API builds T-SAM's controls again (in a
    throwaway gr.Blocks) for every request."""

    HINT = ("steps", "sampling", "scheduler")  # the tab's components the hint follows (+ img2img's denoising strength)

    def __init__(self):
        self.host: dict[str, gr.components.Component] = {}
        self.ours: dict | None = None
        self.wired: set[str] = set()
        self.hint_inputs = self.HINT

    def watch(self, script, is_img2img: bool) -> None:
        """Ask the WebUI for the tab's components (``elem_id`` "<tab>_<name>") as it builds them."""
        tab = "img2img" if is_img2img else "txt2img"
        self.hint_inputs = self.HINT + (("denoising_strength",) if is_img2img else ())
        for name in self.hint_inputs + ("prompt",):
            script.on_after_component(lambda c, name=name: self.host_component(name, c.component), elem_id=f"{tab}_{name}")

    def host_component(self, name: str, component) -> None:
        self.host[name] = component
        self._wire()

    def controls(self, **ours) -> None:
        if self.ours is None:  # the first ui() call builds the page; later ones are the API's
            self.ours = ours
            self._wire()

    def values(self) -> dict:
        """The current (page-load) values of the tab's components the hint follows."""
        return {name: self.host[name].value for name in self.hint_inputs if name in self.host}

    def _wire(self) -> None:
        if self.ours is None:
            return
        o = self.ours
        if all(name in self.host for name in self.hint_inputs) and "hint" not in self.wired:
            self.wired.add("hint")
            names = self.hint_inputs
            inputs = [o["guided_steps"], o["refine"]] + [self.host[name] for name in names]
            update = lambda percent, refine, *values: steps_hint(percent, refine, **dict(zip(names, values)))
            for source in inputs:
                source.change(fn=update, inputs=inputs, outputs=[o["hint"]], show_progress=False)
        if "prompt" in self.host and "prompt" not in self.wired:
            self.wired.add("prompt")
            from .preview import preview
            o["preview_button"].click(fn=lambda text, g, order, enc: gr.update(value=preview(text, g, order, enc), visible=True),
                                      inputs=[self.host["prompt"], o["gamma"], o["gamma_order"], o["text_encoder"]],
                                      outputs=[o["preview_image"]], show_progress=False)


def build(script, is_img2img: bool) -> list:
    """The accordion; ``script.links`` (a ``Links``) connects it to the tab's own components."""
    elem_id = script.elem_id
    with InputAccordion(False, label="T-SAM", elem_id=elem_id("enabled")) as enabled:
        gr.HTML(intro(elem_id))
        with FormRow(elem_classes="tsam-row"):
            gamma = _slider("gamma", elem_id)
            alpha = _slider("alpha", elem_id)
        with FormRow(elem_classes="tsam-row"):
            guided_steps = _slider("guided_steps", elem_id)
        later = {}  # refine is built below; the hint's value is recomputed on every page load
        hint = gr.HTML(lambda: steps_hint(guided_steps.value, later["refine"].value if later else default("refine"),
                                          **script.links.values()),
                       elem_id=elem_id("hint"))
        with FormRow(elem_classes="tsam-row"):
            preview_button = gr.Button("Preview T for the prompt", elem_id=elem_id("preview"), size="sm")
        preview_image = gr.Image(label="T: what each token binds to", show_label=False, interactive=False,
                                 visible=False, type="pil", elem_id=elem_id("preview_image"))
        with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
            with FormRow(elem_classes="tsam-row"):  # refinement
                refine = later["refine"] = _checkbox("refine", elem_id)
                refine_iterations = _slider("refine_iterations", elem_id, interactive=default("refine"))
                early_stop = _checkbox("early_stop", elem_id, interactive=default("refine"))
            with FormRow(elem_classes="tsam-row"):  # how T and the maps are compared
                loss = _radio("loss", elem_id)
                gamma_order = _radio("gamma_order", elem_id, visible=gamma_order_matters(default("loss")))
                length_scaling = _radio("length_scaling", elem_id)
            with FormRow(elem_classes="tsam-row"):
                # SDXL's choice of encoder: its semantics, and any rule to hide it for one-encoder
                # models, belong to the SDXL backend
                text_encoder = _radio("text_encoder", elem_id)
            with FormRow(elem_classes="tsam-row"):
                smoothing = _checkbox("smoothing", elem_id)
                hires = _checkbox("hires", elem_id)
                diagnostics = _checkbox("diagnostics", elem_id)
        refine.change(fn=refinement_editable, inputs=[refine], outputs=[refine_iterations, early_stop],
                      show_progress=False)
        loss.change(fn=gamma_order_shown, inputs=[loss], outputs=[gamma_order], show_progress=False)
    controls = dict(enabled=enabled, gamma=gamma, alpha=alpha, guided_steps=guided_steps, refine=refine,
                    refine_iterations=refine_iterations, loss=loss, gamma_order=gamma_order, smoothing=smoothing,
                    hires=hires, diagnostics=diagnostics, early_stop=early_stop, text_encoder=text_encoder,
                    length_scaling=length_scaling)
    script.links.controls(hint=hint, guided_steps=guided_steps, refine=refine, gamma=gamma, gamma_order=gamma_order,
                          text_encoder=text_encoder, preview_button=preview_button, preview_image=preview_image)
    keys = [PasteKey(name) for name in NAMES]
    script.infotext_fields = [(controls[key.name], key) for key in keys]
    script.paste_field_names = keys
    return [controls[name] for name in NAMES]
