"""Mirrors modules/infotext_utils.py: ``quote`` / ``unquote``, ``parse_generation_parameters``
(the last line's ``key: value`` pairs), and ``paste_func``'s conversion of each field (the inner
function of ``connect_paste``), so paste round trips can be checked without a browser."""

import json
import re

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


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


UNCHANGED = object()  # what gr.update() means for a pasted field: leave the control as it is


def paste_value(component_value, key, params):
    """The value paste sets on a control whose current value is ``component_value``, given its
    infotext field ``key`` (a name or a callable), or UNCHANGED."""
    v = key(params) if callable(key) else params.get(key, None)
    if v is None:
        return UNCHANGED
    valtype = type(component_value)
    if valtype == bool and v == "False":
        return False
    if valtype == int:
        return float(v)
    return valtype(v)
