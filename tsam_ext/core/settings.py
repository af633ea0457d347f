"""T-SAM's parameters: defaults, ranges, and parsing of UI, API and X/Y/Z values, host-free.

The order of ``FIELDS`` is the positional order of the script's arguments (UI controls and
``alwayson_scripts`` args): append only, never reorder.
"""

import math
from dataclasses import dataclass, fields, replace
from typing import Any


class SettingsError(ValueError):
    """A value a user or client gave that T-SAM cannot use; the message says which and why."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    default: Any
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()


FIELDS = (
    Field("enabled", bool, False, "Enable T-SAM", "Steer the image with the text encoder's own attention."),
    Field("gamma", float, 3.0, "Gamma (temperature)",
          "Sharpens the text encoder's attention before it becomes the target: higher binds each word to "
          "fewer, stronger partners.", 0.5, 8.0, 0.1),
    Field("alpha", float, 5.0, "Alpha (step size)",
          "How far each guided step moves the image (tuned by the authors on 4-7 token prompts; Length scaling "
          "keeps long prompts' steps near that size: 0.6-1.2x on SD 1.x / 2.x, up to 3x on SDXL at 75 tokens, "
          "docs/length.md). Too high breaks the image; too low changes nothing.",
          0.0, 40.0, 0.5),
    Field("guided_steps", int, 60, "Guided steps (% of sampling steps)",
          "Guidance runs on the first part of sampling, where the layout forms: 60% is 12 of 20 steps, "
          "30 of 50.", 0, 100, 1),
    Field("refine", bool, True, "Iterative refinement",
          "At 0%, 20% and 40% of the steps, repeat the update until the layout settles (the reference "
          "method; slower)."),
    Field("refine_iterations", int, 20, "Refinement iterations",
          "Updates at each refinement point; up to 10 more follow while the loss is already low.", 1, 50, 1),
    Field("loss", str, "reference", "Loss", "reference: the authors' code (published numbers); "
          "paper: eq. 7 of the paper.", choices=("reference", "paper")),
    Field("gamma_order", str, "reference", "Gamma order (paper loss)", "Used by the paper loss only (the "
          "reference loss compares rows by direction, which the order does not change). reference: power, then "
          "normalise rows; paper: normalise rows, then power.", choices=("reference", "paper")),
    Field("smoothing", bool, True, "Smooth attention maps", "3x3 smoothing of each word's map before "
          "comparing them, as the reference."),
    Field("hires", bool, False, "Guide the hires pass", "Also guide the second pass of hires fix (the "
          "first pass, which decides the layout, is always guided)."),
    Field("diagnostics", bool, False, "Diagnostics images", "Add images showing T, S, where each word "
          "landed and the loss per guided step."),
    Field("early_stop", bool, False, "Stop refinement early",
          "Stop an image's refinement once its loss changed by less than 0.1% over the last 3 updates: faster, "
          "but not the reference. Off: exactly the refinement iterations (+10 while the loss is low), as the "
          "reference."),
    Field("text_encoder", str, "both", "Text encoder for T (SDXL)",
          "SDXL base has two text encoders: both (T from the mean of their attention), CLIP-L or bigG alone. "
          "Models with one (SD 1.x, SD 2.x, the SDXL refiner) always use theirs, and the setting is not written "
          "to their infotext.", choices=("both", "clip-l", "bigg")),
    Field("length_scaling", str, "normalised", "Length scaling",
          "normalised: a guided step moves the image as far for a long prompt (many tokens, BREAK chunks, AND) as "
          "for the 4-7 token prompts alpha was tuned on, and the refinement's \"loss is low\" means the same; "
          "prompts of up to 7 tokens are unchanged. reference: the authors' sum, whose steps grow with the "
          "prompt's length.", choices=("normalised", "reference")),
)
NAMES = tuple(f.name for f in FIELDS)
BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    gamma: float = 3.0
    alpha: float = 5.0
    guided_steps: int = 60
    refine: bool = True
    refine_iterations: int = 20
    loss: str = "reference"
    gamma_order: str = "reference"
    smoothing: bool = True
    hires: bool = False
    diagnostics: bool = False
    early_stop: bool = False
    text_encoder: str = "both"
    length_scaling: str = "normalised"

    @property
    def guided_fraction(self) -> float:
        return self.guided_steps / 100.0

    @property
    def target_order(self) -> str:
        """The gamma order T is built with: the user's only where it can matter (the paper loss).

        The two orders differ by a positive scale per row of T, which the reference loss's per-row
        cosine ignores, except in rows the paper order pushes below the cosine's eps (high gamma,
        long prompts), where it would only distort the loss: the reference loss gets the reference's
        order, always, so a hidden or forgotten setting can never change its result.
        """
        return self.gamma_order if gamma_order_matters(self.loss) else "reference"

    def updated(self, **values) -> "Settings":
        """A copy with ``values`` parsed and checked like any user input."""
        return replace(self, **{k: coerce(k, v) for k, v in values.items()})


assert tuple(f.name for f in fields(Settings)) == NAMES
assert all(BY_NAME[f.name].default == f.default for f in fields(Settings))


def gamma_order_matters(loss: str) -> bool:
    """Whether the gamma order is used with this loss (the UI shows its control only then)."""
    return loss == "paper"


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _number(field: Field, value: Any):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingsError(f"{field.name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{field.name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{field.name} must be finite, got {value!r}")
    if field.kind is int:
        if number != int(number):
            raise SettingsError(f"{field.name} must be a whole number, got {value!r}")
        number = int(number)
    if not field.minimum <= number <= field.maximum:
        raise SettingsError(f"{field.name} must be between {field.minimum:g} and {field.maximum:g}, got {value!r}")
    return number


def coerce(name: str, value: Any):
    """One parsed value, or SettingsError saying what was wrong with it."""
    field = BY_NAME.get(name)
    if field is None:
        raise SettingsError(f"unknown T-SAM parameter {name!r}; known: {', '.join(NAMES)}")
    if field.kind is bool:
        return _bool(name, value)
    if field.kind is str:
        if not isinstance(value, str) or value not in field.choices:
            raise SettingsError(f"{name} must be one of {', '.join(field.choices)}, got {value!r}")
        return value
    return _number(field, value)


def from_args(args, base: Settings | None = None) -> Settings:
    """Settings from the script's positional args, or from one dict argument first.

    Every value not given is ``base``'s: the UI's defaults (the built-in ones without a base). A
    dict (``{"enabled": true, "gamma": 3}``) stands in the place of ``enabled``; positional values
    after it (the API fills in the UI's defaults there) count as given, and the dict's names win.
    """
    base = base or Settings()
    args = list(args)
    if len(args) > len(NAMES):
        raise SettingsError(f"T-SAM takes at most {len(NAMES)} arguments ({', '.join(NAMES)}), got {len(args)}")
    if args and isinstance(args[0], dict):
        return base.updated(**(dict(zip(NAMES[1:], args[1:])) | args[0]))
    return base.updated(**dict(zip(NAMES, args)))
