"""Mirrors modules/prompt_parser.py: prompt-editing schedules, AND, emphasis and cond batching.

Same functions and results as upstream for the syntax the tests use: ``[from:to:when]``,
``[to:when]``, ``[from::when]``, ``[a|b]`` (nested too), ``( )`` / ``[ ]`` emphasis kept as
text, ``AND`` with ``:weight``, ``BREAK``. Upstream parses with a lark grammar; this stand-in
uses a small recursive-descent parser with the same step rules.
"""

from __future__ import annotations

import re
from collections import namedtuple

import torch


class _ParseError(Exception):
    pass


def _parse(text: str):
    """Nodes: str | ("sched", before|None, after, number_text) | ("alt", [options])."""
    pos = 0

    def seq(stops):
        nonlocal pos
        nodes = []
        while pos < len(text) and text[pos] not in stops:
            c = text[pos]
            if c == "\\" and pos + 1 < len(text):
                nodes.append(text[pos:pos + 2])
                pos += 2
            elif c == "[":
                nodes.append(bracket())
            elif c == "(":
                pos += 1
                inner = seq(")")
                if pos >= len(text):
                    raise _ParseError("unclosed (")
                pos += 1
                nodes += ["("] + inner + [")"]
            elif c in "])":
                raise _ParseError(c)
            elif c in ":|":  # outside a bracket's parts, plain text
                nodes.append(c)
                pos += 1
            else:
                start = pos
                while pos < len(text) and text[pos] not in "\\[]():|":
                    pos += 1
                nodes.append(text[start:pos])
        return nodes

    def bracket():
        nonlocal pos
        pos += 1
        parts, seps = [seq(":|]")], []
        while pos < len(text) and text[pos] in ":|":
            seps.append(text[pos])
            pos += 1
            parts.append(seq(":|]"))
        if pos >= len(text):
            raise _ParseError("unclosed [")
        pos += 1
        if "|" in seps:
            if ":" in seps:
                raise _ParseError("mixed")
            return ("alt", parts)
        number = "".join(n for n in parts[-1] if isinstance(n, str)).strip() if len(parts) in (2, 3) else ""
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", number) and all(isinstance(n, str) for n in parts[-1]):
            if len(parts) == 3:
                return ("sched", parts[0], parts[1], number)
            return ("sched", None, parts[0], number)
        if seps:
            raise _ParseError("not a schedule")
        return ["["] + parts[0] + ["]"]

    nodes = seq("")
    if pos != len(text):
        raise _ParseError("trailing")
    return nodes


def _walk(nodes, visit):
    for n in nodes:
        if isinstance(n, list):
            _walk(n, visit)
        elif isinstance(n, tuple):
            visit(n)
            for child in ([n[1] or [], n[2]] if n[0] == "sched" else n[1]):
                _walk(child, visit)


def _render(nodes, step, when) -> str:
    out = []
    for n in nodes:
        if isinstance(n, str):
            out.append(n)
        elif isinstance(n, list):
            out.append(_render(n, step, when))
        elif n[0] == "sched":
            out.append(_render(n[1] or [], step, when) if step <= when[id(n)] else _render(n[2], step, when))
        else:
            out.append(_render(n[1][(step - 1) % len(n[1])], step, when))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """Per prompt: ``[[end_at_step, text], ...]``; e.g. ("a [b:3]", 10) -> [[3, 'a '], [10, 'a b']]."""
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def schedule(prompt):
        try:
            nodes = _parse(prompt)
        except _ParseError:
            return [[steps, prompt]]
        found, when = [steps], {}

        def visit(n):
            if n[0] == "sched":
                v = float(n[3])
                if use_old_scheduling:
                    v = v * steps if v < 1 else v
                else:
                    v = (v - flt_offset) * steps if "." in n[3] else v - int_offset
                when[id(n)] = min(steps, int(v))
                if when[id(n)] >= 1:
                    found.append(when[id(n)])
            else:
                found.extend(range(1, steps + 1))

        _walk(nodes, visit)
        return [[t, _render(nodes, t, when)] for t in sorted(set(found))]

    cache = {p: schedule(p) for p in set(prompts)}
    return [cache[p] for p in prompts]


class SdConditioning(list):
    """Mirrors SdConditioning: a list of prompts that carries the image size."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res, cache = [], {}
    for prompt, prompt_schedule in zip(prompts, get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)):
        if prompt in cache:
            res.append(cache[prompt])
            continue
        conds = model.get_learned_conditioning(SdConditioning([t for _, t in prompt_schedule], copy_from=prompts))
        cache[prompt] = [ScheduledPromptConditioning(end, {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i])
                         for i, (end, _) in enumerate(prompt_schedule)]
        res.append(cache[prompt])
    return res


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts):
    res_indexes, prompt_indexes = [], {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0
            index = prompt_indexes.get(text)
            if index is None:
                index = prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], w) for i, w in indexes] for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def _target_index(schedules, current_step):
    return next((i for i, entry in enumerate(schedules) if current_step <= entry.end_at_step), 0)


class DictWithShape(dict):
    """SDXL's conds: a dict whose ``shape`` is its crossattn's."""

    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def reconstruct_cond_batch(c, current_step):
    param = c[0][0].cond
    if isinstance(param, dict):
        res = DictWithShape({k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in param.items()})
    else:
        res = torch.zeros((len(c),) + param.shape, device=param.device, dtype=param.dtype)
    for i, schedule in enumerate(c):
        cond = schedule[_target_index(schedule, current_step)].cond
        if isinstance(param, dict):
            for k, v in cond.items():
                res[k][i] = v
        else:
            res[i] = cond
    return res


def stack_conds(tensors):
    """Different token lengths are padded by repeating each tensor's last vector."""
    count = max(t.shape[0] for t in tensors)
    return torch.stack([t if t.shape[0] == count else torch.vstack([t, t[-1:].repeat(count - t.shape[0], 1)]) for t in tensors])


def reconstruct_multicond_batch(c, current_step):
    param = c.batch[0][0].schedules[0].cond
    tensors, conds_list = [], []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable in composable_prompts:
            conds_for_batch.append((len(tensors), composable.weight))
            tensors.append(composable.schedules[_target_index(composable.schedules, current_step)].cond)
        conds_list.append(conds_for_batch)
    if isinstance(tensors[0], dict):
        stacked = {k: stack_conds([x[k] for x in tensors]) for k in tensors[0]}
        return conds_list, DictWithShape(stacked)
    return conds_list, stack_conds(tensors).to(device=param.device, dtype=param.dtype)


_attention_token = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    """[[text, weight], ...]: (a) x1.1, [a] /1.1, (a:w) xw, escapes literal, BREAK -> ["BREAK", -1]."""
    res, round_open, square_open = [], [], []

    def multiply(start, factor):
        for item in res[start:]:
            item[1] *= factor

    for m in _attention_token.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / 1.1)
        else:
            for k, part in enumerate(_break.split(token)):
                if k:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for start in round_open:
        multiply(start, 1.1)
    for start in square_open:
        multiply(start, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged
