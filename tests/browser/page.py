"""A minimal A1111 txt2img tab around T-SAM's UI, served by gradio 3.41 for the browser test.

Laid out as A1111 1.10.1 does: a settings column (prompt, sampling method, schedule type and
"Sampling steps", then the always-on
scripts through the ScriptRunner stand-in) beside a results column (Generate, output). The
extension's style.css and javascript/tsam.js (with the two A1111 globals it uses) and a stand-in
of A1111's inputAccordion.js are loaded into the page;
Generate runs a stub that records the script arguments it receives.
"""

import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from modules import scripts, sd_samplers, sd_schedulers  # noqa: E402
from modules.ui_components import FormGroup, FormRow  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# A1111's own style.css spaces the header checkbox that inputAccordion.js adds; this page has only ours
A1111_CSS = "input[type=checkbox].input-accordion-checkbox { margin-right: 0.5em; }\n"
# A1111's script.js globals that extensions' javascript/*.js use: the app root and a DOM-change hook
A1111_GLOBALS = """
window.gradioApp = () => document;
window.onUiUpdate = (callback) => {
    new MutationObserver(() => callback()).observe(document.body, {childList: true, subtree: true});
    callback();
};
"""


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Txt2ImgPage:
    """The tab's gr.Blocks, its ScriptRunner, and the script args of every Generate (``calls``)."""

    def __init__(self, script_class):
        self.runner = scripts.ScriptRunner([script_class], is_img2img=False)
        self.calls: list[list] = []
        self.demo = self._build()
        self.url = None

    def _build(self) -> gr.Blocks:
        with gr.Blocks(css=A1111_CSS + _read(os.path.join(ROOT, "style.css")), analytics_enabled=False,
                       title="txt2img") as demo:
            with gr.Row(equal_height=False):
                with gr.Column(elem_id="txt2img_settings"):
                    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="txt2img_prompt")
                    self.runner.component_created("txt2img_prompt", prompt)
                    with FormRow():  # A1111's sampler script: method, schedule type, steps
                        names = [s.name for s in sd_samplers.all_samplers]
                        sampler = gr.Dropdown(label="Sampling method", choices=names, value=names[0], elem_id="txt2img_sampling")
                        self.runner.component_created("txt2img_sampling", sampler)
                        types = [s.label for s in sd_schedulers.schedulers]
                        scheduler = gr.Dropdown(label="Schedule type", choices=types, value=types[0], elem_id="txt2img_scheduler")
                        self.runner.component_created("txt2img_scheduler", scheduler)
                        steps = gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps",
                                          elem_id="txt2img_steps")
                        self.runner.component_created("txt2img_steps", steps)
                    with FormGroup(elem_id="txt2img_script_container"):
                        self.runner.setup_ui()
                with gr.Column(elem_id="txt2img_results"):
                    generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
                    output = gr.Textbox(label="Output", elem_id="txt2img_output")
            generate.click(fn=self._generate, inputs=[prompt, steps, *self.runner.inputs[1:]], outputs=[output])
            demo.load(fn=None, _js=_read(os.path.join(HERE, "input_accordion.js")))
            demo.load(fn=None, _js="() => {" + A1111_GLOBALS + _read(os.path.join(ROOT, "javascript", "tsam.js")) + "}")
        return demo

    def _generate(self, prompt, steps, *script_args):
        """The pipeline's stand-in: keep the script args, say which run this was."""
        self.calls.append(list(script_args))
        return f"run {len(self.calls)}: {steps} steps"

    def launch(self) -> str:
        """Serve the page from a background thread; returns its URL."""
        port = free_port()
        self.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                         show_api=False, share=False, inbrowser=False)
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    def close(self) -> None:
        self.demo.close()
