"""T-SAM's accordion in a real browser: a minimal txt2img tab (tests/browser/page.py) served by
gradio 3.41 and driven by playwright through Debian's chromium.

Needs playwright (pip) and chromium (apt), both installed by .ci/setup; without them the tests
fail, they do not skip. The full-page screenshot of the set-up accordion is written to
``SCREENSHOT``.
"""

import os
import re
import shutil
import tempfile
from functools import partial

import pytest

import webui
from browser.page import Txt2ImgPage
from tsam_ext.core.settings import BY_NAME, NAMES

SCREENSHOT = os.path.join(tempfile.gettempdir(), "tsam_browser.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
OPEN = re.compile(r"\bopen\b")


def _playwright():
    """playwright's sync API and chromium's path, or a failure saying what to install."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed in this venv: run .ci/setup")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not on PATH (Debian's package 'chromium'): run .ci/setup")
    return sync_playwright, expect, chromium


@pytest.fixture(scope="module")
def served():
    """The tab served on 127.0.0.1, a headless chromium, playwright's expect; closed afterwards."""
    sync_playwright, expect, chromium = _playwright()
    page = Txt2ImgPage(webui.load_script_module().Script)
    page.launch()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            yield page, browser, expect
            browser.close()
    finally:
        page.close()


@pytest.fixture
def ui(served):
    """A freshly loaded tab: (the Txt2ImgPage, the browser tab, playwright's expect)."""
    page, browser, expect = served
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    # the page asks Google for fonts; nothing off this machine should be waited for
    tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith(page.url) else route.abort())
    errors = []
    tab.on("pageerror", lambda error: errors.append(error))
    tab.goto(page.url)
    tab.wait_for_selector(f"#{_id(page, 'enabled')}-visible-checkbox", timeout=20_000)
    page.calls.clear()
    yield page, tab, expect
    tab.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _id(page, name: str) -> str:
    """The elem_id T-SAM gives its control ``name`` on this tab."""
    return page.runner.scripts[0].elem_id(name)


def _control(page, tab, name: str):
    """The block of T-SAM's control ``name`` in the browser."""
    return tab.locator("#" + _id(page, name))


def _set_number(expect, block, value) -> None:
    """Type ``value`` into a slider's number box, as a user does, and see the slider follow."""
    box = block.locator("input[type=number]")
    box.fill(str(value))
    box.blur()
    expect(block.locator("input[type=range]")).to_have_value(str(value))


def _generate(page, tab, expect) -> list:
    """Press Generate; the script args the stubbed pipeline received."""
    runs = len(page.calls) + 1
    tab.locator("#txt2img_generate").click()
    expect(tab.locator("#txt2img_output textarea")).to_have_value(re.compile(rf"^run {runs}:"))
    return page.calls[-1]


def _enable(page, tab, expect) -> None:
    """Tick the header's checkbox: the hidden gradio checkbox follows, the accordion stays shut
    (as in A1111, a click on the box only enables), and a click on the title opens it."""
    accordion = _control(page, tab, "enabled")
    tab.locator(f"#{_id(page, 'enabled')}-visible-checkbox").check()
    expect(tab.locator(f"#{_id(page, 'enabled')}-checkbox input")).to_be_checked()
    expect(accordion.locator("> .label-wrap")).not_to_have_class(OPEN)
    accordion.locator("> .label-wrap").click()
    expect(accordion).to_have_class(re.compile(r"\binput-accordion-open\b"))
    expect(_control(page, tab, "gamma")).to_be_visible()
    expect(tab.locator(f"#{_id(page, 'enabled')}-visible-checkbox")).to_be_checked()


def test_every_control_reaches_the_pipeline_in_api_order(ui):
    page, tab, expect = ui
    control = partial(_control, page, tab)
    _enable(page, tab, expect)
    control("advanced").locator("> .label-wrap").click()
    expect(control("advanced").locator("> .label-wrap")).to_have_class(OPEN)

    for name, value in (("gamma", 4.5), ("alpha", 12.5), ("guided_steps", 50), ("refine_iterations", 30)):
        _set_number(expect, control(name), value)
    control("early_stop").locator("input[type=checkbox]").check()
    expect(control("gamma_order")).to_be_hidden()  # used by the paper loss only
    control("loss").get_by_label("paper", exact=True).check()
    expect(control("gamma_order")).to_be_visible()
    control("gamma_order").get_by_label("paper", exact=True).check()
    control("smoothing").locator("input[type=checkbox]").uncheck()
    control("length_scaling").get_by_label("reference", exact=True).check()
    _set_number(expect, tab.locator("#txt2img_steps"), 30)
    hint = control("hint").locator(".tsam-hint")  # gradio 3.41 gives gr.HTML's id to two nested divs
    expect(hint).to_have_text("Guides steps 1-15 of 30; refines at step 1, 7, 13.")
    tab.screenshot(path=SCREENSHOT, full_page=True)
    print("screenshot:", SCREENSHOT)
    control("refine").locator("input[type=checkbox]").uncheck()
    expect(hint).to_have_text("Guides steps 1-15 of 30.")
    expect(control("refine_iterations").locator("input[type=number]")).to_be_disabled()
    expect(control("early_stop").locator("input[type=checkbox]")).to_be_disabled()
    _set_number(expect, tab.locator("#txt2img_steps"), 20)  # the hint follows the sampler: DDIM runs 19 of 20
    tab.locator("#txt2img_sampling input").fill("DDIM")
    tab.locator("#txt2img_sampling input").press("Enter")
    expect(hint).to_have_text("Guides steps 1-10 of the 19 steps DDIM runs for 20.")

    expected = dict(enabled=True, gamma=4.5, alpha=12.5, guided_steps=50, refine=False, refine_iterations=30,
                    loss="paper", gamma_order="paper", smoothing=False, hires=False, diagnostics=False,
                    early_stop=True, text_encoder="both", length_scaling="reference")
    args = _generate(page, tab, expect)
    assert args == [expected[name] for name in NAMES]
    assert args[0] is True


def test_every_control_has_its_plain_words_tooltip(ui):
    page, tab, expect = ui
    _enable(page, tab, expect)
    for name in NAMES[1:]:
        label = _control(page, tab, name).locator("label, span").first
        expect(label).to_have_attribute("title", BY_NAME[name].help)


def test_preview_renders_t_for_the_prompt_box(ui, webui):
    """webui: a loaded model (the stand-in over the real CLIP) for the preview to use."""
    page, tab, expect = ui
    _enable(page, tab, expect)
    tab.locator("#txt2img_prompt textarea").fill("a black car and a white clock")
    image = _control(page, tab, "preview_image")
    expect(image).to_be_hidden()
    _control(page, tab, "preview").click()
    expect(image.locator("img")).to_be_visible(timeout=20_000)
    assert image.locator("img").evaluate("img => img.naturalWidth") > 200


def test_unticking_the_header_sends_disabled(ui):
    page, tab, expect = ui
    _enable(page, tab, expect)
    assert _generate(page, tab, expect)[0] is True
    tab.locator(f"#{_id(page, 'enabled')}-visible-checkbox").uncheck()
    expect(tab.locator(f"#{_id(page, 'enabled')}-checkbox input")).not_to_be_checked()
    args = _generate(page, tab, expect)
    assert args[0] is False
    assert args[1:] == page.runner.default_args()[2:]  # the rest: the UI's defaults, untouched
