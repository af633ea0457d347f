"""Mirrors how modules/ui.py (``create_ui``) and modules/ui_common.py (``create_output_panel``)
wire the paste fields of txt2img and img2img in A1111 1.10.1, inside one gr.Blocks.

Each tab has its prompt, negative prompt and "Sampling steps" (keys "Prompt", "Negative prompt",
"Steps"), then its always-on scripts (``ScriptRunner.setup_ui``, after ``on_after_component``
saw the prompt and steps); its paste fields are those three and then the scripts'
``infotext_fields`` (inpaint shares img2img's); its paste button (↙) is bound to its own
prompt. Its output panel, built after the scripts, has "Send to img2img / inpaint / extras",
bound with ``source_tabname`` "txt2img" from txt2img only, and the tab's scripts'
``paste_field_names``. PNG Info's "Send to" buttons are bound to its parameters text.
``connect_paste_params_buttons`` runs last. Layout, images, seeds and every other control are
left out.
"""

import gradio as gr

from modules import infotext_utils

TABS = ("img2img", "inpaint", "extras")


class Tab:
    def __init__(self, name: str, runner):
        self.name, self.runner = name, runner
        self.prompt = gr.Textbox(label="Prompt", elem_id=f"{name}_prompt")
        runner.component_created(f"{name}_prompt", self.prompt)
        self.negative_prompt = gr.Textbox(label="Negative prompt", elem_id=f"{name}_neg_prompt")
        self.steps = gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps", elem_id=f"{name}_steps")
        runner.component_created(f"{name}_steps", self.steps)
        self.paste = gr.Button("↙", elem_id=f"{name}_paste")
        runner.setup_ui()
        self.send = {tab: gr.Button(f"Send to {tab}", elem_id=f"{name}_send_to_{tab}") for tab in TABS}
        self.fields = [(self.prompt, "Prompt"), (self.negative_prompt, "Negative prompt"), (self.steps, "Steps"),
                       *runner.infotext_fields]


class UI:
    """``tabs["txt2img"]`` / ``tabs["img2img"]``; PNG Info's parameters text and send buttons."""

    def __init__(self, txt2img_runner, img2img_runner):
        infotext_utils.reset()
        with gr.Blocks(analytics_enabled=False) as self.demo:
            self.tabs = {"txt2img": Tab("txt2img", txt2img_runner), "img2img": Tab("img2img", img2img_runner)}
            self.pnginfo_text = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            self.pnginfo_send = {tab: gr.Button(f"Send to {tab}") for tab in ("txt2img",) + TABS}
            for name, tab in self.tabs.items():
                for target, button in tab.send.items():
                    infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                        paste_button=button, tabname=target, source_tabname="txt2img" if name == "txt2img" else None,
                        paste_field_names=tab.runner.paste_field_names))
            t2i, i2i = self.tabs["txt2img"], self.tabs["img2img"]
            infotext_utils.add_paste_fields("txt2img", None, t2i.fields)
            infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                paste_button=t2i.paste, tabname="txt2img", source_text_component=t2i.prompt))
            infotext_utils.add_paste_fields("img2img", None, i2i.fields)
            infotext_utils.add_paste_fields("inpaint", None, i2i.fields)
            infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                paste_button=i2i.paste, tabname="img2img", source_text_component=i2i.prompt))
            infotext_utils.add_paste_fields("extras", None, None)
            for target, button in self.pnginfo_send.items():
                infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                    paste_button=button, tabname=target, source_text_component=self.pnginfo_text))
            infotext_utils.connect_paste_params_buttons()
