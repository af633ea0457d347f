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
from ..core.schedule import REFINE_AT, fraction_of, refinement_steps
from ..core.settings import BY_NAME, NAMES
from .options import default


def _slider(name: str, elem_id) -> gr.Slider:
    f = BY_NAME[name]
    return gr.Slider(minimum=f.minimum, maximum=f.maximum, step=f.step, value=default(name), label=f.label,
                     elem_id=elem_id(name))


def _checkbox(name: str, elem_id, value=None) -> gr.Checkbox:
    f = BY_NAME[name]
    return gr.Checkbox(value=f.default if value is None else value, label=f.label, elem_id=elem_id(name))


def _radio(name: str, elem_id) -> gr.Radio:
    f = BY_NAME[name]
    return gr.Radio(choices=list(f.choices), value=f.default, label=f.label, elem_id=elem_id(name))


def intro(elem_id) -> str:
    """The accordion's first line; it carries every control's tooltip for javascript/tsam.js."""
    tooltips = {elem_id(name): BY_NAME[name].help for name in NAMES[1:]}
    return ("<p class='tsam-intro tsam-tooltips' data-tooltips=\"" + html.escape(json.dumps(tooltips), quote=True) + "\">"
            "Keeps every object of the prompt and binds each attribute to its noun, by steering the image with the "
            "text encoder's own attention (<a href='https://arxiv.org/abs/2411.15236' target='_blank'>T-SAM, "
            "CVPR 2025</a>). Hover a control for what it does.</p>")


def steps_hint(steps, percent, refine) -> str:
    """What the guided-steps percentage means for the current number of sampling steps."""
    steps, percent = int(steps or 0), int(percent or 0)
    guided = fraction_of(steps, percent / 100)
    text = f"Guides steps 1-{guided} of {steps}" if guided else f"Guides none of the {steps} steps"
    if refine and guided:
        points = sorted(refinement_steps(steps, guided, REFINE_AT))
        text += "; refines at step " + ", ".join(str(s + 1) for s in points)
    return f"<span class='tsam-hint'>{text}.</span>"


class Links:
    """Events between the tab's own components (its "Sampling steps" slider and prompt box) and
    T-SAM's controls, each wired once, as soon as both ends exist: the WebUI may build either
    first, and the API builds T-SAM's controls again (in a throwaway gr.Blocks) for every request."""

    def __init__(self):
        self.host: dict[str, gr.components.Component] = {}
        self.ours: dict | None = None
        self.wired: set[str] = set()

    def host_component(self, name: str, component) -> None:
        self.host[name] = component
        self._wire()

    def controls(self, **ours) -> None:
        if self.ours is None:  # the first ui() call builds the page; later ones are the API's
            self.ours = ours
            self._wire()

    def steps(self) -> int:
        return getattr(self.host.get("steps"), "value", 20)

    def _wire(self) -> None:
        if self.ours is None:
            return
        o = self.ours
        if "steps" in self.host and "steps" not in self.wired:
            self.wired.add("steps")
            for source in (self.host["steps"], o["guided_steps"], o["refine"]):
                source.change(fn=steps_hint, inputs=[self.host["steps"], o["guided_steps"], o["refine"]],
                              outputs=[o["hint"]], show_progress=False)
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
        hint = gr.HTML(lambda: steps_hint(script.links.steps(), guided_steps.value,
                                          later["refine"].value if later else default("refine")),
                       elem_id=elem_id("hint"))
        with FormRow(elem_classes="tsam-row"):
            preview_button = gr.Button("Preview T for the prompt", elem_id=elem_id("preview"), size="sm")
        preview_image = gr.Image(label="T: what each token binds to", show_label=False, interactive=False,
                                 visible=False, type="pil", elem_id=elem_id("preview_image"))
        with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
            with FormRow(elem_classes="tsam-row"):
                refine = later["refine"] = _checkbox("refine", elem_id, default("refine"))
                refine_iterations = _slider("refine_iterations", elem_id)
            with FormRow(elem_classes="tsam-row"):
                loss = _radio("loss", elem_id)
                gamma_order = _radio("gamma_order", elem_id)
            with FormRow(elem_classes="tsam-row"):
                smoothing = _checkbox("smoothing", elem_id)
                hires = _checkbox("hires", elem_id)
                diagnostics = _checkbox("diagnostics", elem_id, default("diagnostics"))
            with FormRow(elem_classes="tsam-row"):
                early_stop = _checkbox("early_stop", elem_id)
                text_encoder = _radio("text_encoder", elem_id)
    controls = dict(enabled=enabled, gamma=gamma, alpha=alpha, guided_steps=guided_steps, refine=refine,
                    refine_iterations=refine_iterations, loss=loss, gamma_order=gamma_order, smoothing=smoothing,
                    hires=hires, diagnostics=diagnostics, early_stop=early_stop, text_encoder=text_encoder)
    script.links.controls(hint=hint, guided_steps=guided_steps, refine=refine, gamma=gamma, gamma_order=gamma_order,
                          text_encoder=text_encoder, preview_button=preview_button, preview_image=preview_image)
    script.infotext_fields = [(enabled, lambda d: infotext.read(d)["enabled"])] + [
        (controls[name], lambda d, name=name: infotext.read(d).get(name)) for name in NAMES[1:]]
    script.paste_field_names = list(infotext.KEYS.values())
    return [controls[name] for name in NAMES]
