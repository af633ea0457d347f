"""Mirrors modules/extra_networks.py ``parse_prompt(s)``: ``<name:args>`` tags are taken out of prompts."""

import re
from collections import defaultdict

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    res = defaultdict(list)

    def found(m):
        res[m.group(1)].append(m.group(2).split(":"))
        return ""

    return re.sub(re_extra_net, found, prompt), res


def parse_prompts(prompts):
    res, extra_data = [], None
    for prompt in prompts:
        updated, parsed = parse_prompt(prompt)
        extra_data = parsed if extra_data is None else extra_data
        res.append(updated)
    return res, extra_data
