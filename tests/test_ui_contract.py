"""What a WebUI user touches besides the accordion: parameters pasted back (the paste button, PNG
Info, the API's ``infotext``) and sent from tab to tab, through A1111's own wiring of paste fields
(tests/a1111/modules/ui.py, infotext_utils.py); X/Y/Z plot axes; API arguments (positional and
one dict), their ranges and the defaults they start from."""

import importlib.util
import os
import types

import pytest
import torch

from gradio_events import Page
from modules import processing, scripts, shared
from modules.api import api
from modules.infotext_utils import parse_generation_parameters
from modules.ui import UI
from tsam_ext.core import guidance, infotext, settings
from tsam_ext.host import job, xyz

XYZ_PATH = os.path.join(os.path.dirname(__file__), "a1111", "scripts", "xyz_grid.py")
# a value for every control that is not its default
CHANGED = dict(enabled=True, gamma=4.5, alpha=12.5, guided_steps=45, refine=False, refine_iterations=33, loss="paper",
               gamma_order="paper", smoothing=False, hires=True, diagnostics=True, early_stop=True, text_encoder="bigg",
               length_scaling="reference")


@pytest.fixture
def page(webui):
    """txt2img and img2img with T-SAM, wired as the WebUI wires them, in a freshly loaded "browser"."""
    ui = UI(scripts.ScriptRunner([webui.module.Script]), scripts.ScriptRunner([webui.module.Script], is_img2img=True))
    return ui, Page(ui.demo)


def controls(ui, tab: str) -> dict:
    return dict(zip(settings.NAMES, ui.tabs[tab].runner.scripts[0].controls))


def test_every_control_has_a_changed_value_to_carry():
    assert set(CHANGED) == set(settings.NAMES)
    assert all(value != settings.BY_NAME[name].default for name, value in CHANGED.items())


@pytest.mark.parametrize("target", ["img2img", "inpaint"])
def test_send_to_img2img_carries_every_control(page, target):
    ui, browser = page
    source, destination = controls(ui, "txt2img"), controls(ui, "img2img")
    for name, value in CHANGED.items():
        browser.set(source[name], value)
    browser.trigger(ui.tabs["txt2img"].send[target], "click")
    assert {name: browser.get(destination[name]) for name in settings.NAMES} == CHANGED
    # and the controls that follow others follow there too
    assert browser.get(destination["gamma_order"], "visible") is True
    assert browser.get(destination["early_stop"], "interactive") is False


def test_send_to_extras_and_from_img2img_carry_nothing(page):
    ui, browser = page
    for name, value in CHANGED.items():
        browser.set(controls(ui, "img2img")[name], value)
    browser.trigger(ui.tabs["img2img"].send["img2img"], "click")  # A1111 sends only the image from img2img
    browser.trigger(ui.tabs["txt2img"].send["extras"], "click")
    assert {n: browser.get(c) for n, c in controls(ui, "img2img").items()} == CHANGED
    assert all(browser.get(c) == settings.BY_NAME[n].default for n, c in controls(ui, "txt2img").items())


def restored(chosen: settings.Settings, before: dict) -> dict:
    """The controls after pasting ``chosen``'s parameters over controls set to ``before``."""
    got = {name: getattr(chosen, name) for name in settings.NAMES}
    got["diagnostics"] = before["diagnostics"]  # a display option, not part of the result
    got["text_encoder"] = before["text_encoder"]  # not written for the stand-in's SD 1.x: it has one encoder
    if not chosen.refine:  # not written: refinement's own controls are left as they were
        got["refine_iterations"], got["early_stop"] = before["refine_iterations"], before["early_stop"]
    if chosen.loss == "reference":  # not written; the control, hidden, goes back to the order that is used
        got["gamma_order"] = "reference"
    return got


@pytest.mark.parametrize("values", [
    dict(),
    dict(gamma=2.5, alpha=12.5, guided_steps=40, refine=False, loss="paper", gamma_order="paper", smoothing=False,
         hires=True),
    dict(gamma=0.5, alpha=0, guided_steps=100, refine_iterations=7, early_stop=True, loss="paper",
         text_encoder="clip-l"),
])
def test_pasted_parameters_restore_every_control(webui, page, values):
    chosen = settings.Settings(enabled=True).updated(**values)
    _, res = webui.generate(tsam=dict(enabled=True) | values, steps=2, width=64, height=64)
    ui, browser = page
    for tab, paste_button, text_box in (("txt2img", ui.tabs["txt2img"].paste, ui.tabs["txt2img"].prompt),
                                        ("img2img", ui.pnginfo_send["img2img"], ui.pnginfo_text)):
        before = CHANGED | dict(enabled=False)
        for name, value in before.items():
            browser.set(controls(ui, tab)[name], value)
        browser.set(text_box, res.infotexts[0])
        browser.trigger(paste_button, "click")
        assert {name: browser.get(c) for name, c in controls(ui, tab).items()} == restored(chosen, before), tab


def test_api_infotext_field_restores_the_same_arguments(webui, page):
    """The request field ``infotext`` reads script arguments through the same paste fields."""
    values = dict(gamma=2.5, alpha=0, refine_iterations=7, early_stop=True, loss="paper", gamma_order="paper")
    _, res = webui.generate(tsam=dict(enabled=True) | values, steps=2, width=64, height=64)
    ui, _ = page
    runner = ui.tabs["txt2img"].runner
    mentioned = api.infotext_script_args(res.infotexts[0], "txt2img", runner)
    script = runner.scripts[0]
    got = {settings.NAMES[i - script.args_from]: v for i, v in mentioned.items()}
    chosen = settings.Settings(enabled=True).updated(**values)
    assert got == {name: getattr(chosen, name) for name in settings.NAMES if name not in ("diagnostics", "text_encoder")}
    assert all(type(v) is type(settings.BY_NAME[n].default) for n, v in got.items())


def test_pasting_parameters_without_tsam_switches_it_off(webui, page):
    _, res = webui.generate(tsam=dict(enabled=False), steps=2, width=64, height=64)
    ui, browser = page
    tab = ui.tabs["txt2img"]
    for name, value in CHANGED.items():
        browser.set(controls(ui, "txt2img")[name], value)
    browser.set(tab.prompt, res.infotexts[0])
    browser.trigger(tab.paste, "click")
    assert {n: browser.get(c) for n, c in controls(ui, "txt2img").items()} == CHANGED | dict(enabled=False)


def test_gamma_order_is_shown_only_with_the_paper_loss(page):
    ui, browser = page
    c = controls(ui, "txt2img")
    assert browser.get(c["gamma_order"], "visible") is False
    browser.set(c["loss"], "paper")
    assert browser.get(c["gamma_order"], "visible") is True
    browser.set(c["gamma_order"], "paper")
    browser.set(c["loss"], "reference")
    assert browser.get(c["gamma_order"], "visible") is False and browser.get(c["gamma_order"]) == "reference"


def test_refinement_controls_are_greyed_while_refinement_is_off(page):
    ui, browser = page
    c = controls(ui, "txt2img")
    browser.set(c["refine"], False)
    assert browser.get(c["refine_iterations"], "interactive") is False and browser.get(c["early_stop"], "interactive") is False
    browser.set(c["refine"], True)
    assert browser.get(c["refine_iterations"], "interactive") is True and browser.get(c["early_stop"], "interactive") is True


def test_gamma_order_cannot_change_an_image_of_the_reference_loss(webui, targets_of):
    """Not even where the paper order would push rows of T under the cosine's eps (gamma 8, a
    30-token prompt), which changes the reference loss (tests/test_guidance.py shows the orders
    agree elsewhere): with the reference loss, T is always built in the reference order."""
    from tsam_ext.core.cross_maps import COSINE_EPS

    prompt = ("a photo of a small red cube on top of a large blue sphere next to a green pyramid and a yellow cone "
              "under a bright sky with white clouds")
    t = targets_of(prompt, 8.0, "paper")[0][0].t
    assert t.shape[0] == 30 and t.tril(-1)[2:].norm(dim=1).min() < COSINE_EPS
    common = dict(prompt=prompt, steps=2, width=64, height=64)
    latents = {order: webui.generate(tsam=dict(enabled=True, gamma=8.0, refine=False, gamma_order=order), **common)[1]
               .latents[0] for order in ("reference", "paper")}
    assert torch.equal(latents["paper"], latents["reference"])


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
                      "[T-SAM] Refinement iterations (0 = off)", "[T-SAM] Loss", "[T-SAM] Early stop",
                      "[T-SAM] Text encoder for T (SDXL)", "[T-SAM] Length scaling"]
    p = object()
    assert axis(module, "[T-SAM] Alpha").format_value(p, None, 7.5) == "T-SAM alpha: 7.5"
    assert axis(module, "[T-SAM] Enabled").format_value(p, None, "False") == "T-SAM: off"
    assert axis(module, "[T-SAM] Refinement iterations (0 = off)").format_value(p, None, 0) == "T-SAM refinement: off"
    assert axis(module, "[T-SAM] Loss").choices() == ["reference", "paper"]
    assert axis(module, "[T-SAM] Early stop").choices() == ["False", "True"]
    assert axis(module, "[T-SAM] Early stop").format_value(p, None, "True") == "T-SAM early stop: on"
    scaling = axis(module, "[T-SAM] Length scaling")
    assert scaling.choices() == ["normalised", "reference"]
    assert scaling.format_value(p, None, "reference") == "T-SAM length scaling: reference"
    cell = types.SimpleNamespace()
    scaling.apply(cell, "reference", None)
    assert cell.tsam_length_scaling == "reference" and cell.tsam_axis
    with pytest.raises(RuntimeError, match="length_scaling must be one of"):
        module.process_axis(None, scaling, "", ["normalised", "normalized"])


def test_axes_exist_in_api_only_mode(webui):
    """``webui.api_only`` (webui.py:26-37) builds the API before it runs ``before_ui_callback``,
    and the Api's constructor builds every script's UI (api.py:255-270: ``ui.create_ui`` creates
    every script, ``initialize_scripts``, then their UIs; ``init_default_script_args`` builds them
    again). The plot keeps the axis options its ``ui()`` saw; a request's X type is an index into them."""
    from modules import script_callbacks

    module = load_xyz()
    plot = module.Script()
    webui.module.Script()  # initialize_scripts creates every script (T-SAM's too) before any UI
    plot.ui(False)  # then create_ui / init_default_script_args
    script_callbacks.run("before_ui")  # webui.py:37, after the API is up
    labels = [plot.axis(i).label for i in range(len(plot.current_axis_options))]
    assert "[T-SAM] Text encoder for T (SDXL)" in labels and "[T-SAM] Gamma" in labels


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


def test_refinement_makes_the_reference_count_unless_early_stop_is_on(webui, monkeypatch):
    """An early-stop by loss axis at alpha 0 (a grid's usual baseline): the loss never moves, so
    the early stop fires as soon as it may (3 + 1 updates). Off, refinement makes exactly its 20
    updates, and 10 more where the reference rule extends them (the reference loss is below its
    threshold here, the paper loss above), then the step's own update."""
    passes = []
    real = guidance._loss_and_grad
    monkeypatch.setattr(guidance, "_loss_and_grad", lambda *a, **k: passes.append(1) or real(*a, **k))
    module = load_xyz()
    xyz.register()
    stop, loss = axis(module, "[T-SAM] Early stop"), axis(module, "[T-SAM] Loss")
    xs = module.process_axis(None, stop, "", stop.choices())
    ys = module.process_axis(None, loss, "", loss.choices())
    runner = webui.txt2img
    p = processing.StableDiffusionProcessingTxt2Img(script_args=runner.default_args(), scripts_runner=runner,
                                                    prompt="a black car and a white clock", seed=1, steps=3, width=64,
                                                    height=64, sampler_name="Euler")
    p.tsam_alpha, p.tsam_guided_steps = 0.0, 34  # one guided step of 3, refined (refinement is on by default)
    counts = {}
    for x, y in [(x, y) for y in ys for x in xs]:
        start = len(passes)
        (_, _, res), = module.run_cells(p, stop, [x], loss, [y])
        counts[(x, y)] = len(passes) - start
        assert parse_generation_parameters(res.infotexts[0])["T-SAM early stop"] == x
    assert counts == {("False", "reference"): 31, ("False", "paper"): 21, ("True", "reference"): 4, ("True", "paper"): 4}


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
    ([True] + [None] * 10 + [1, "bigg"], dict(early_stop=True, text_encoder="bigg")),
    ([True] + [None] * 12 + ["reference"], dict(length_scaling="reference")),
    ([{"enabled": True, "length_scaling": "reference"}], dict(length_scaling="reference")),
    ([{"enabled": True, "early_stop": "true"}], dict(early_stop=True)),
    ([{"enabled": True, "alpha": 7}, 2.0, 9.0], dict(gamma=2.0, alpha=7.0)),  # after a dict: given; the dict wins
])
def test_api_arguments_positional_or_one_dict(args, expected):
    if None in args:  # positions not under test: the defaults' values
        args = [getattr(settings.Settings(), n) if a is None else a for n, a in zip(settings.NAMES, args)]
    got = settings.from_args(args)
    for name, value in expected.items():
        assert getattr(got, name) == value and type(getattr(got, name)) is type(value)


@pytest.mark.parametrize("args,message", [
    ([True, "3"] + [0] * 13, "at most 14 arguments"),
    ([{"enabled": True}] + [0] * 14, "at most 14 arguments"),
    ([True, None], "gamma must be a number"),
    ([True, 3, 5, 60, "yes"], "refine must be true or false"),
    ([True, 3, float("nan")], "alpha must be finite"),
    ([{"enabled": True, "Gamma": 3}], "unknown T-SAM parameter 'Gamma'"),
    ([{"enabled": True, "loss": 1}], "loss must be one of reference, paper"),
    ([{"enabled": True, "early_stop": "maybe"}], "early_stop must be true or false"),
    ([{"enabled": True, "length_scaling": "normalized"}], "length_scaling must be one of normalised, reference"),
])
def test_api_argument_errors_say_what_is_wrong(args, message):
    with pytest.raises(settings.SettingsError, match=message):
        settings.from_args(args)


def test_every_argument_form_starts_from_the_settings_tab_defaults(webui, monkeypatch):
    """Settings → T-SAM's defaults, after the reload they need: the UI's controls, the API's
    positional args and a dict (as the API fills it in, or alone) all mean the same settings."""
    for name, value in dict(alpha=8.5, guided_steps=40, refine=False).items():
        monkeypatch.setitem(shared.opts.data, f"tsam_default_{name}", value)
    runner = scripts.ScriptRunner([webui.module.Script])  # the UI, reloaded
    import gradio as gr
    with gr.Blocks():
        runner.setup_ui()
    script = runner.scripts[0]
    defaults = api.init_default_script_args(runner)  # the API, started with it
    ui_args = runner.default_args()
    ui_args[script.args_from] = True  # the header ticked
    forms = {
        "UI": ui_args,
        "positional": api.init_script_args({"T-SAM": {"args": [True, 3.0]}}, defaults, runner),
        "dict": api.init_script_args({"t-sam": {"args": [{"enabled": True, "gamma": 3.0}]}}, defaults, runner),
        "dict alone": [0] * script.args_from + [{"enabled": True, "gamma": 3.0}],
    }
    want = settings.Settings(enabled=True, alpha=8.5, guided_steps=40, refine=False)
    got = {form: job.settings_for(types.SimpleNamespace(), args[script.args_from:]) for form, args in forms.items()}
    assert got == dict.fromkeys(forms, want)
    p = processing.StableDiffusionProcessingTxt2Img(script_args=forms["dict"], scripts_runner=runner, seed=1, steps=3,
                                                    prompt="a black car and a white clock", width=64, height=64,
                                                    sampler_name="Euler")
    written = parse_generation_parameters(processing.process_images(p).infotexts[0])
    assert (written["T-SAM alpha"], written["T-SAM guided steps"], written["T-SAM refinement"]) == ("8.5", "40%", "off")
