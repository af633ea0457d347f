"""T-SAM's lines in an image's parameters (the WebUI's infotext), host-free.

Written only when T-SAM guided the image: every parameter that decides the result, then what
happened (the loss trace, warnings). ``read`` turns pasted parameters back into settings values;
parameters without T-SAM's keys mean T-SAM was off.
"""

from .settings import Settings, SettingsError, coerce, gamma_order_matters

KEYS = {
    "gamma": "T-SAM gamma",
    "alpha": "T-SAM alpha",
    "guided_steps": "T-SAM guided steps",
    "refine_iterations": "T-SAM refinement",
    "loss": "T-SAM loss",
    "gamma_order": "T-SAM gamma order",
    "smoothing": "T-SAM smoothing",
    "hires": "T-SAM hires pass",
    "early_stop": "T-SAM early stop",
    "text_encoder": "T-SAM text encoder",
    "length_scaling": "T-SAM length scaling",
}
# parameters of an image made before a setting existed: what T-SAM did then
BEFORE = {"length_scaling": "reference"}
MARKER = KEYS["gamma"]        # present exactly when T-SAM was on
TRACE = "T-SAM loss trace"    # first -> last guided loss of the image
WARNING = "T-SAM warning"     # guidance ran but something was skipped
ERROR = "T-SAM error"         # T-SAM was asked for but could not run: the image is unguided
RESULT_KEYS = (TRACE, WARNING, ERROR)


def number(value: float) -> str:
    return f"{value:g}"


def write(settings: Settings) -> dict[str, str]:
    """The parameters' entries; the gamma order and the early stop only where they are used (the
    paper loss; refinement on)."""
    values = {
        KEYS["gamma"]: number(settings.gamma),
        KEYS["alpha"]: number(settings.alpha),
        KEYS["guided_steps"]: f"{settings.guided_steps}%",
        KEYS["refine_iterations"]: str(settings.refine_iterations) if settings.refine else "off",
        KEYS["loss"]: settings.loss,
        KEYS["gamma_order"]: settings.gamma_order if gamma_order_matters(settings.loss) else None,
        KEYS["smoothing"]: str(settings.smoothing),
        KEYS["hires"]: str(settings.hires),
        KEYS["early_stop"]: str(settings.early_stop) if settings.refine else None,
        KEYS["text_encoder"]: settings.text_encoder,
        KEYS["length_scaling"]: settings.length_scaling,
    }
    return {key: value for key, value in values.items() if value is not None}


def all_keys() -> tuple[str, ...]:
    return tuple(KEYS.values()) + RESULT_KEYS


def read(params: dict) -> dict:
    """Settings values from parsed infotext parameters: ``{"enabled": False}`` without T-SAM's
    keys; otherwise ``enabled`` and every value that parses (a broken one is left out), with
    ``BEFORE``'s values for keys an older T-SAM did not write."""
    if MARKER not in params:
        return {"enabled": False}
    values = {"enabled": True} | {name: value for name, value in BEFORE.items() if KEYS[name] not in params}
    for name, key in KEYS.items():
        if key not in params:
            continue
        raw = str(params[key]).strip()
        try:
            if name == "guided_steps":
                values[name] = coerce(name, raw.rstrip("%"))
            elif name == "refine_iterations":
                values["refine"] = raw.lower() != "off"
                if values["refine"]:
                    values[name] = coerce(name, raw)
            else:
                values[name] = coerce(name, raw)
        except SettingsError:
            continue
    return values


def trace(first: float, last: float) -> str:
    return f"{first:.4f} -> {last:.4f}"
