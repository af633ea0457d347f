"""X/Y/Z plot axes for T-SAM, registered into the WebUI's built-in ``xyz_grid`` script.

An axis sets ``p.tsam_<setting>`` on the cell's copy of ``p``; ``job.settings_for`` reads it.
A value axis (gamma, alpha, ...) turns T-SAM on for its cells; the "[T-SAM] Enabled" axis
decides on/off explicitly. Values are checked before the grid runs.
"""

from modules import scripts

from ..core.settings import BY_NAME, SettingsError, coerce
from .job import OVERRIDE

PREFIX = "[T-SAM]"


def _apply(name: str):
    def apply(p, x, xs):
        setattr(p, OVERRIDE + name, coerce(name, x))
        setattr(p, OVERRIDE + "axis", True)
    return apply


def _apply_enabled(p, x, xs):
    setattr(p, OVERRIDE + "enabled", coerce("enabled", x))


def _apply_refinement(p, x, xs):
    iterations = int(x)
    setattr(p, OVERRIDE + "refine", iterations > 0)
    if iterations > 0:
        setattr(p, OVERRIDE + "refine_iterations", coerce("refine_iterations", iterations))
    setattr(p, OVERRIDE + "axis", True)


def _confirm(name: str, allow_zero: bool = False):
    def confirm(p, xs):
        for x in xs:
            if allow_zero and float(x) == 0:
                continue
            try:
                coerce(name, x)
            except SettingsError as e:
                raise RuntimeError(f"T-SAM axis: {e}") from None
    return confirm


def _legend(text: str, unit: str = ""):
    def format_value(p, opt, x):
        return f"{text}: {round(x, 8) if isinstance(x, float) else x}{unit}"
    return format_value


def _switch(text: str, name: str):
    def format_value(p, opt, x):
        return f"{text}: {'on' if coerce(name, x) else 'off'}"
    return format_value


def axes(xyz):
    """The axis options, built with the xyz module's own ``AxisOption``."""
    option = xyz.AxisOption
    refinement = lambda p, opt, x: f"T-SAM refinement: {int(x) if int(x) > 0 else 'off'}"
    return [
        option(f"{PREFIX} Enabled", str, _apply_enabled, format_value=_switch("T-SAM", "enabled"),
               choices=xyz.boolean_choice(reverse=True), confirm=_confirm("enabled")),
        option(f"{PREFIX} Gamma", float, _apply("gamma"), format_value=_legend("T-SAM gamma"), confirm=_confirm("gamma")),
        option(f"{PREFIX} Alpha", float, _apply("alpha"), format_value=_legend("T-SAM alpha"), confirm=_confirm("alpha")),
        option(f"{PREFIX} Guided steps (%)", int, _apply("guided_steps"), format_value=_legend("T-SAM guided", "%"),
               confirm=_confirm("guided_steps")),
        option(f"{PREFIX} Refinement iterations (0 = off)", int, _apply_refinement, format_value=refinement,
               confirm=_confirm("refine_iterations", allow_zero=True)),
        option(f"{PREFIX} Loss", str, _apply("loss"), format_value=_legend("T-SAM loss"),
               choices=lambda: list(BY_NAME["loss"].choices), confirm=_confirm("loss")),
        option(f"{PREFIX} Early stop", str, _apply("early_stop"), format_value=_switch("T-SAM early stop", "early_stop"),
               choices=xyz.boolean_choice(reverse=True), confirm=_confirm("early_stop")),
        option(f"{PREFIX} {BY_NAME['text_encoder'].label}", str, _apply("text_encoder"),
               format_value=_legend("T-SAM text encoder"), choices=lambda: list(BY_NAME["text_encoder"].choices),
               confirm=_confirm("text_encoder")),
        option(f"{PREFIX} {BY_NAME['length_scaling'].label}", str, _apply("length_scaling"),
               format_value=_legend("T-SAM length scaling"), choices=lambda: list(BY_NAME["length_scaling"].choices),
               confirm=_confirm("length_scaling")),
    ]


def find_xyz_module():
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid"):
            return data.module
    return None


def register() -> None:
    """Add the axes once (each T-SAM Script calls this when the WebUI creates it, before any
    script's UI is built; again after a UI reload, with a freshly loaded plot module)."""
    xyz = find_xyz_module()
    if xyz is None:
        print("T-SAM: the X/Y/Z plot script was not found; no T-SAM axes")
        return
    if not any(opt.label.startswith(PREFIX) for opt in xyz.axis_options):
        xyz.axis_options.extend(axes(xyz))
