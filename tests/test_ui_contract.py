"""What a WebUI user touches besides the accordion: infotext written and pasted back (PNG Info,
"Send to"), X/Y/Z plot axes, API arguments (positional and one dict) and their ranges."""

import importlib.util
import os

import pytest
import torch

from modules import scripts
from modules.infotext_utils import UNCHANGED, paste_value, parse_generation_parameters
from tsam_ext.core import infotext, settings
from tsam_ext.host import xyz

XYZ_PATH = os.path.join(os.path.dirname(__file__), "a1111", "scripts", "xyz_grid.py")


def pasted(webui, line):
    """What pasting ``line`` sets on each T-SAM control: {setting name: value or UNCHANGED}."""
    script = webui.txt2img.scripts[0]
    params = parse_generation_parameters(line)
    names = {id(c): n for c, n in zip(script.controls, settings.NAMES)}
    return {names[id(c)]: paste_value(c.value, key, params) for c, key in script.infotext_fields}


@pytest.mark.parametrize("values", [
    dict(),
    dict(gamma=2.5, alpha=12.5, guided_steps=40, refine=False, loss="paper", gamma_order="paper", smoothing=False, hires=True),
    dict(gamma=0.5, alpha=0, guided_steps=100, refine_iterations=7),
])
def test_infotext_round_trip_restores_every_control(webui, values):
    chosen = settings.Settings(enabled=True, refine=values.get("refine", True)).updated(**values)
    _, res = webui.generate(tsam=dict(enabled=True) | values, steps=3)
    got = pasted(webui, res.infotexts[0])
    for name in settings.NAMES:
        if name == "diagnostics":  # a display option, not part of the result
            assert got[name] is UNCHANGED
        elif name == "refine_iterations" and not chosen.refine:
            assert got[name] is UNCHANGED
        else:
            assert got[name] == getattr(chosen, name), name
    assert set(infotext.KEYS.values()) <= set(webui.txt2img.paste_field_names)


def test_pasting_parameters_without_tsam_switches_it_off(webui):
    _, res = webui.generate(tsam=dict(enabled=False), steps=3)
    got = pasted(webui, res.infotexts[0])
    assert got["enabled"] is False
    assert all(v is UNCHANGED for k, v in got.items() if k != "enabled")


def test_a_broken_value_is_left_alone_not_guessed():
    params = {infotext.MARKER: "3", infotext.KEYS["alpha"]: "loud", infotext.KEYS["guided_steps"]: "55%"}
    values = infotext.read(params)
    assert values["enabled"] and values["gamma"] == 3.0 and values["guided_steps"] == 55 and "alpha" not in values


def load_xyz():
    spec = importlib.util.spec_from_file_location("xyz_grid.py", XYZ_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scripts.scripts_data[:] = [scripts.ScriptClassData(module.Script, XYZ_PATH, os.path.dirname(XYZ_PATH), module)]
    return module


def axis(module, label):
    return next(o for o in module.axis_options if o.label == label)


def test_axes_register_once_with_readable_labels(webui):
    module = load_xyz()
    xyz.register()
    xyz.register()  # the WebUI calls it again on every UI reload
    labels = [o.label for o in module.axis_options if o.label.startswith("[T-SAM]")]
    assert labels == ["[T-SAM] Enabled", "[T-SAM] Gamma", "[T-SAM] Alpha", "[T-SAM] Guided steps (%)",
                      "[T-SAM] Refinement iterations (0 = off)", "[T-SAM] Loss", "[T-SAM] Text encoder for T (SDXL)"]
    p = object()
    assert axis(module, "[T-SAM] Alpha").format_value(p, None, 7.5) == "T-SAM alpha: 7.5"
    assert axis(module, "[T-SAM] Enabled").format_value(p, None, "False") == "T-SAM: off"
    assert axis(module, "[T-SAM] Refinement iterations (0 = off)").format_value(p, None, 0) == "T-SAM refinement: off"
    assert axis(module, "[T-SAM] Loss").choices() == ["reference", "paper"]


def test_axis_values_are_checked_before_the_grid_runs(webui):
    module = load_xyz()
    xyz.register()
    with pytest.raises(RuntimeError, match="alpha must be between 0 and 40"):
        module.process_axis(None, axis(module, "[T-SAM] Alpha"), "5, 400")
    with pytest.raises(RuntimeError, match="guided_steps must be between 0 and 100"):
        module.process_axis(None, axis(module, "[T-SAM] Guided steps (%)"), "50, 120")
    assert module.process_axis(None, axis(module, "[T-SAM] Refinement iterations (0 = off)"), "0, 10") == [0, 10]


def test_gamma_by_alpha_grid_of_3_by_3(webui):
    from modules import processing

    module = load_xyz()
    xyz.register()
    x_opt, y_opt = axis(module, "[T-SAM] Gamma"), axis(module, "[T-SAM] Alpha")
    xs = module.process_axis(None, x_opt, "1, 3, 5")
    ys = module.process_axis(None, y_opt, "0, 5, 10")
    runner = webui.txt2img
    p = processing.StableDiffusionProcessingTxt2Img(script_args=runner.default_args(), scripts_runner=runner,  # T-SAM off in the UI
                                                    prompt="a black car and a white clock", seed=1, steps=3, width=64,
                                                    height=64, sampler_name="Euler", cfg_scale=7.0)
    p.tsam_refine = False
    cells = module.run_cells(p, x_opt, xs, y_opt, ys)
    assert len(cells) == 9
    images = {}
    for x, y, res in cells:
        got = parse_generation_parameters(res.infotexts[0])
        assert (float(got["T-SAM gamma"]), float(got["T-SAM alpha"])) == (x, y)  # the axes turn T-SAM on
        images[(x, y)] = res.latents[0]
    assert torch.equal(images[(1.0, 0.0)], images[(5.0, 0.0)])  # alpha 0 moves nothing, whatever gamma
    assert not torch.equal(images[(1.0, 5.0)], images[(5.0, 5.0)])


def test_enabled_axis_switches_off_and_no_keys_leak_between_cells(webui):
    from modules import processing

    module = load_xyz()
    xyz.register()
    on_off, alpha = axis(module, "[T-SAM] Enabled"), axis(module, "[T-SAM] Alpha")
    xs = module.process_axis(None, on_off, "", on_off.choices())
    assert xs == ["False", "True"]
    runner = webui.txt2img
    args = runner.default_args()
    args[runner.scripts[0].args_from] = True
    p = processing.StableDiffusionProcessingTxt2Img(script_args=args, scripts_runner=runner, prompt="a red cube on a blue box",
                                                    seed=1, steps=3, width=64, height=64, sampler_name="Euler")
    p.tsam_refine = False
    cells = module.run_cells(p, alpha, [5.0], on_off, xs) + module.run_cells(p, on_off, xs, alpha, [5.0])
    for x, y, res in cells:
        enabled = "True" in (x, y)
        assert ("T-SAM gamma" in res.infotexts[0]) == enabled, (x, y)  # the shared dict never leaks an earlier cell


def test_script_info_shows_every_argument_with_its_range(webui):
    script = webui.txt2img.scripts[0]
    assert [getattr(c, "label", None) for c in script.controls][0] == "T-SAM"
    for control, name in zip(script.controls, settings.NAMES):
        field = settings.BY_NAME[name]
        assert control.value == field.default, name
        if field.minimum is not None:
            assert (control.minimum, control.maximum, control.step) == (field.minimum, field.maximum, field.step)
        if field.choices:
            assert [c[0] if isinstance(c, tuple) else c for c in control.choices] == list(field.choices)


@pytest.mark.parametrize("args,expected", [
    ([True, 3, 5, 60], dict(enabled=True, gamma=3.0, alpha=5.0, guided_steps=60)),
    ([{"enabled": True, "alpha": 7, "refine": False}], dict(enabled=True, alpha=7.0, refine=False, gamma=3.0)),
    ([{"enabled": True}, 3.0, 5.0, 60, True, 20, "reference", "reference", True, False, False], dict(enabled=True)),
    ([True, 3.0, 5.0, 60.0, 1, 20.0, "paper"], dict(refine=True, refine_iterations=20, loss="paper")),
])
def test_api_arguments_positional_or_one_dict(args, expected):
    got = settings.from_args(args)
    for name, value in expected.items():
        assert getattr(got, name) == value and type(getattr(got, name)) is type(value)


@pytest.mark.parametrize("args,message", [
    ([True, "3"] + [0] * 12, "at most 13 arguments"),
    ([True, None], "gamma must be a number"),
    ([True, 3, 5, 60, "yes"], "refine must be true or false"),
    ([True, 3, float("nan")], "alpha must be finite"),
    ([{"enabled": True, "Gamma": 3}], "unknown T-SAM parameter 'Gamma'"),
    ([{"enabled": True, "loss": 1}], "loss must be one of reference, paper"),
])
def test_api_argument_errors_say_what_is_wrong(args, message):
    with pytest.raises(settings.SettingsError, match=message):
        settings.from_args(args)
