"""Mirrors how modules/api/api.py (class ``Api``) of A1111 1.10.1 turns a request into script args.

``init_default_script_args``: when the API starts, every script's ``ui()`` is built again (twice)
in a throwaway gr.Blocks and its controls' values become the defaults. ``init_script_args``: each
always-on script's request "args" are written over those defaults, position by position, up to
the script's own argument count. ``infotext_script_args``: of ``apply_infotext``, the script
arguments read from the request's ``infotext`` through the tab's paste fields (a field's function
or its key, cast to the type of its control's value). The selectable script and the request's own
fields are left out.
"""

import gradio as gr

from modules import infotext_utils


def init_default_script_args(script_runner) -> list:
    last_arg_index = max([1] + [script.args_to for script in script_runner.scripts])
    script_args = [None] * last_arg_index
    script_args[0] = 0
    with gr.Blocks():
        for script in script_runner.scripts:
            if script.ui(script.is_img2img):
                script_args[script.args_from:script.args_to] = [elem.value for elem in script.ui(script.is_img2img)]
    return script_args


def init_script_args(alwayson_scripts: dict, default_script_args: list, script_runner, input_script_args=None) -> list:
    script_args = default_script_args.copy()
    for index, value in (input_script_args or {}).items():
        script_args[index] = value
    for name, request in alwayson_scripts.items():
        script = next(s for s in script_runner.scripts if s.title().lower() == name.lower())
        if "args" in request:
            for idx in range(0, min(script.args_to - script.args_from, len(request["args"]))):
                script_args[script.args_from + idx] = request["args"][idx]
    return script_args


def infotext_script_args(infotext: str, tabname: str, script_runner) -> dict:
    """{index in the script args: value} for the request field ``infotext``."""
    params = infotext_utils.parse_generation_parameters(infotext)
    indexes = {v: i for i, v in enumerate(script_runner.inputs)}
    mentioned = {}
    for field in infotext_utils.paste_fields[tabname]["fields"]:
        if field.component not in indexes:
            continue
        value = field.function(params) if field.function else params.get(field.label)
        if value is None:
            continue
        target_type = type(field.component.value)
        if target_type == type(None):
            continue
        if isinstance(value, dict) and value.get("__type__") == "generic_update":
            value = value.get("value")
        if value is not None and not isinstance(value, target_type):
            value = target_type(value)
        if value is not None:
            mentioned[indexes[field.component]] = value
    return mentioned
