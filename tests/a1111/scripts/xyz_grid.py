"""Mirrors scripts/xyz_grid.py (the WebUI's built-in X/Y/Z plot): ``AxisOption`` and its helpers,
the module-level ``axis_options`` list extensions extend, the tab's copy of them made by ``Script.ui`` (what an axis index means), the parsing of an axis's values
(``process_axis``: CSV or dropdown, int/float ranges as plain values, ``confirm``), and the cell
loop (``cell``: a shallow ``copy(p)`` per cell, each axis's ``apply``, ``process_images``)."""

import csv
from copy import copy
from io import StringIO
from itertools import chain

from modules import scripts
from modules.processing import process_images


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)
    return fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]
    return choice


def format_value_add_label(p, opt, x):
    if type(x) == float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    return round(x, 8) if type(x) == float else x


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
]


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


def process_axis(p, opt, vals, vals_dropdown=None):
    """The values a user typed (or picked) for an axis, converted and confirmed as the plot does."""
    valslist = vals_dropdown if opt.choices is not None else csv_string_to_list_strip(vals)
    valslist = [opt.type(x) for x in valslist if str(x).strip() != ""]
    if opt.confirm:
        opt.confirm(p, valslist)
    return valslist


def run_cells(p, x_opt, xs, y_opt, ys):
    """Every cell of an X/Y grid: [(x, y, Processed), ...] in the plot's order."""
    cells = []
    for y in ys:
        for x in xs:
            pc = copy(p)
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            cells.append((x, y, process_images(pc)))
    return cells


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        """The axis options of this tab as they are when the UI is built: the type dropdowns
        (type="index") list them, and ``run`` picks an axis by its index in this copy, so an option
        added to ``axis_options`` later never reaches this script. (The controls are left out.)"""
        self.current_axis_options = [x for x in axis_options if type(x) == AxisOption or x.is_img2img == is_img2img]

    def axis(self, index):
        """``run``'s ``self.current_axis_options[x_type]``: the option a request's index names."""
        return self.current_axis_options[index]
