"""Mirrors modules/infotext_utils.py: ``quote`` / ``unquote``, ``parse_generation_parameters``
(the last line's ``key: value`` pairs; the defaults it adds for A1111's own fields are left out),
``PasteField``, ``ParamBinding``, the registries ``paste_fields`` / ``registered_param_bindings``
with ``reset`` / ``add_paste_fields`` / ``register_paste_params_button``, and the wiring of
``connect_paste_params_buttons``: a binding with ``source_tabname`` ("Send to" from txt2img's
output) copies, value for value, the source tab's fields whose key is one of the fixed names or
the binding's ``paste_field_names``; one with ``source_text_component`` (a tab's paste button,
PNG Info) runs ``connect_paste``'s ``paste_func`` over parsed parameters. Left out: sending
images and sizes (T-SAM has none), reading params.txt for an empty prompt, the override-settings
dropdown (no T-SAM setting has an infotext name)."""

import json
import re

import gradio as gr

from modules import errors, script_callbacks, shared

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
type_of_gr_update = type(gr.update())


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button, self.tabname = paste_button, tabname
        self.source_text_component, self.source_image_component = source_text_component, source_image_component
        self.source_tabname, self.override_settings_component = source_tabname, override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    """(component, target): ``target`` is an infotext key (``label``) or a function of the parsed
    parameters (``function``); a string that is also callable is both."""

    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api, self.component = api, component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str) -> dict:
    res, prompt, negative, done_with_prompt = {}, "", "", False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt, line = True, line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for k, v in re_param.findall(lastline):
        if v and v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"], res[f"{k}-2"] = m.group(1), m.group(2)
        else:
            res[k] = v
    res["Prompt"], res["Negative prompt"] = prompt, negative
    return res


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


def connect_paste_params_buttons():
    for binding in registered_param_bindings:
        fields = paste_fields[binding.tabname]["fields"]
        if binding.source_text_component is not None and fields is not None:
            connect_paste(binding.paste_button, fields, binding.source_text_component, binding.tabname)
        if binding.source_tabname is not None and fields is not None:
            names = (["Prompt", "Negative prompt", "Steps", "Face restoration"] + (["Seed"] if shared.opts.send_seed else [])
                     + binding.paste_field_names)
            binding.paste_button.click(
                fn=lambda *x: x,
                inputs=[field for field, name in paste_fields[binding.source_tabname]["fields"] if name in names],
                outputs=[field for field, name in fields if name in names],
                show_progress=False,
            )
        binding.paste_button.click(fn=None, _js=f"switch_to_{binding.tabname}", inputs=None, outputs=None,
                                   show_progress=False)


def connect_paste(button, fields, input_comp, tabname):
    def paste_func(prompt):
        params = parse_generation_parameters(prompt)
        script_callbacks.infotext_pasted_callback(prompt, params)
        res = []
        for output, key in fields:
            if callable(key):
                try:
                    v = key(params)
                except Exception:
                    errors.report(f"Error executing {key}", exc_info=True)
                    v = None
            else:
                v = params.get(key, None)
            if v is None:
                res.append(gr.update())
            elif isinstance(v, type_of_gr_update):
                res.append(v)
            else:
                try:
                    valtype = type(output.value)
                    if valtype == bool and v == "False":
                        val = False
                    elif valtype == int:
                        val = float(v)
                    else:
                        val = valtype(v)
                    res.append(gr.update(value=val))
                except Exception:
                    res.append(gr.update())
        return res

    button.click(fn=paste_func, inputs=[input_comp], outputs=[x[0] for x in fields], show_progress=False)
    button.click(fn=None, _js=f"recalculate_prompts_{tabname}", inputs=[], outputs=[], show_progress=False)
