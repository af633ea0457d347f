"""What T-SAM does during one generation of the WebUI (an X/Y/Z cell is a generation of its own).

``start`` (the Script's ``process``) reads the settings, the UI's or the API's with X/Y/Z
overrides on ``p``, decides whether T-SAM can run, and writes the infotext; a ``Job`` then lives
on ``p`` until ``finish`` (``postprocess``). ``before_sampling`` (``process_before_every_sampling``)
steers each sampling pass. A setting that cannot be used, or a model T-SAM cannot guide, gives
a clear message in the console, the infotext and under the image, and an unguided image.
"""

from modules import images, shared

from ..core import diagnostics, infotext
from ..core.recorder import Recorder, UnsupportedUNet
from ..core.schedule import Refinement, make_plan
from ..core.settings import NAMES, Settings, SettingsError, from_args
from . import options, regional_prompter
from .backend import current as backend
from .sampling_pass import model_key
from .text_targets import UnsupportedText

ATTR = "tsam_job"       # the Job of this generation, on p
OVERRIDE = "tsam_"      # X/Y/Z axes set p.tsam_<setting>


class Job:
    def __init__(self, p, settings: Settings):
        self.p, self.settings = p, settings
        self.texts: dict[tuple, backend.TextTargets] = {}  # per loaded checkpoint
        self.losses: dict[tuple[int, bool], tuple[float, float]] = {}  # (image index, hires) -> (first, last)
        self.warnings: list[str] = []
        self.traces = []  # (image index offset, hires, GuidedPass) per finished pass

    def texts_for(self, sd_model) -> "backend.TextTargets":
        """T of this generation's texts for the checkpoint in use (hires and refiner may switch it)."""
        key = model_key(sd_model)
        if key not in self.texts:
            s = self.settings
            self.texts[key] = backend.TextTargets(sd_model, s.gamma, s.target_order, s.text_encoder, warn=self.warn)
        return self.texts[key]

    def plan(self, steps: int):
        s = self.settings
        return make_plan(steps, s.alpha, s.guided_fraction,
                         Refinement(s.refine_iterations, early_stop=s.early_stop) if s.refine else None)

    def log(self, message: str) -> None:
        if getattr(shared.opts, "tsam_console_trace", True) or not message.startswith("T-SAM step"):
            print(message)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            self.log(f"T-SAM: {message}")

    def end_pass(self, sampling_pass) -> None:
        guided = sampling_pass.guided
        if guided is None:
            return
        offset = self.p.iteration * self.p.batch_size
        for image, (first, last) in guided.loss_summary().items():
            self.losses[(offset + image, sampling_pass.hires)] = (first, last)
        self.warnings += [w for w in guided.warnings if w not in self.warnings]
        self.traces.append((offset, sampling_pass.hires, guided))

    def trace_text(self, index: int) -> str | None:
        parts = [infotext.trace(*self.losses[(index, hires)]) + (" (hires)" if hires else "")
                 for hires in (False, True) if (index, hires) in self.losses]
        return "; ".join(parts) or None

    def warning_text(self) -> str | None:
        return "; ".join(self.warnings) or None


def requested(args, p) -> bool:
    """Whether the user asked for T-SAM, before knowing whether the rest of the arguments are valid."""
    override = getattr(p, OVERRIDE + "enabled", None)
    if override is not None:
        return bool(override)
    if getattr(p, OVERRIDE + "axis", False):
        return True
    first = args[0] if args else False
    return bool(first.get("enabled")) if isinstance(first, dict) else first is True


def settings_for(p, args) -> Settings:
    """The UI's / API's arguments over the UI's defaults, then the X/Y/Z overrides on p: a T-SAM
    value axis turns T-SAM on unless an "[T-SAM] Enabled" axis says otherwise."""
    overrides = {name: getattr(p, OVERRIDE + name) for name in NAMES if hasattr(p, OVERRIDE + name)}
    if getattr(p, OVERRIDE + "axis", False):
        overrides.setdefault("enabled", True)
    return from_args(args, options.defaults()).updated(**overrides)


def unsupported(p) -> str | None:
    """Why T-SAM cannot guide this generation, or None."""
    return backend.unsupported(p) or unsupported_model(p.sd_model)



def unsupported_model(model) -> str | None:
    """Why T-SAM cannot guide this checkpoint (SD 1.x, SD 2.x, SDXL and SSD-1B it can), or None."""
    if model is None:
        return "no model is loaded"
    kind = backend.transformer_kind(model)
    if kind is not None:
        return (f"{kind} is a diffusion transformer without the UNet cross-attention T-SAM reads "
                f"(T-SAM guides SD 1.x, SD 2.x and SDXL)")
    unet = backend.unet(model)
    if unet is None:
        return "this checkpoint has no UNet T-SAM can read"
    try:
        Recorder(unet)
        backend.encoders(model)
    except (UnsupportedUNet, UnsupportedText) as e:
        return f"this checkpoint cannot be guided: {e}"
    return None


def refuse(p, reason: str) -> None:
    message = f"{reason}; this image is generated without T-SAM"
    print(f"T-SAM: {message}")
    p.extra_generation_params[infotext.ERROR] = message
    p.comment(f"T-SAM: {message}")


def start(p, *args) -> Job | None:
    """Decide what T-SAM does in this generation; the Job on p, or None (no hook is installed).
    Never raises: an error of T-SAM's gives the image without T-SAM, with the reason."""
    try:
        return _start(p, *args)
    except Exception as e:  # noqa: BLE001 - never lose the generation to T-SAM
        forget(p)
        refuse(p, f"T-SAM could not start ({type(e).__name__}: {e})")
        return None


def forget(p) -> None:
    """No Job and none of T-SAM's infotext keys on p (X/Y/Z cells share one extra_generation_params dict)."""
    for key in infotext.all_keys():
        p.extra_generation_params.pop(key, None)
    setattr(p, ATTR, None)


def _start(p, *args) -> Job | None:
    forget(p)
    try:
        settings = settings_for(p, args)
    except SettingsError as e:
        if requested(args, p):
            refuse(p, f"invalid setting: {e}")
        return None
    if not settings.enabled:
        return None
    reason = unsupported(p)
    if reason is not None:
        refuse(p, reason)
        return None
    job = Job(p, settings)
    p.extra_generation_params.update(infotext.write(settings))
    if len(backend.encoders(p.sd_model)) < 2:  # the text encoder setting only chooses between SDXL's two
        p.extra_generation_params.pop(infotext.KEYS["text_encoder"])
    p.extra_generation_params[infotext.TRACE] = lambda index=0, **_: job.trace_text(index)
    p.extra_generation_params[infotext.WARNING] = lambda **_: job.warning_text()
    setattr(p, ATTR, job)
    return job


def before_sampling(p) -> None:
    """Steer the sampling pass about to start (txt2img, img2img, or hires when asked for)."""
    job = getattr(p, ATTR, None)
    try:
        if job is None or (p.is_hr_pass and not job.settings.hires):
            return
        blocked = regional_prompter.blocks_guidance(p)
        if blocked is not None:
            job.warn(f"{blocked}; this image is generated without T-SAM")
            return
        backend.SamplingPass(job, p, hires=p.is_hr_pass).install()
    except Exception as e:  # noqa: BLE001 - never lose the generation to T-SAM
        job.warn(f"guidance could not start: {type(e).__name__}: {e}")


def finish(p, processed) -> None:
    """End of the generation: the loss summary, and the diagnostics images when asked for. The
    images and their infotexts exist already: an error here is said in the console and under them."""
    job = getattr(p, ATTR, None)
    if job is None:
        return
    setattr(p, ATTR, None)
    try:
        _finish(p, processed, job)
    except Exception as e:  # noqa: BLE001 - never lose the generation to T-SAM
        message = f"T-SAM: {type(e).__name__} at the end of the generation: {e}"
        print(message)
        processed.comments += message + "\n"


def _finish(p, processed, job: Job) -> None:
    summary = [f"image {i + 1}{' hires' if hires else ''}: {first:.4f} -> {last:.4f}"
               for (i, hires), (first, last) in sorted(job.losses.items())]
    if summary:
        job.log("T-SAM loss (first -> last guided pass): " + ", ".join(summary))
    if job.settings.diagnostics:
        add_diagnostics(p, processed, job)


def add_diagnostics(p, processed, job: Job) -> None:
    """One figure per guided image and pass, after the images (so never in a grid): in the
    gallery and the API's images; saved only when the T-SAM setting says so."""
    for offset, hires, guided in job.traces:
        for image in sorted({i for step in guided.trace for i in step.losses}):
            index = offset + image
            position = processed.index_of_first_image + index
            if position >= len(processed.images):
                continue
            figure = diagnostics.image_figure(processed.images[position], guided.trace, image, job.settings.smoothing)
            if figure is None:
                continue
            caption = f"T-SAM diagnostics of image {index + 1}" + (" (hires pass)" if hires else "")
            processed.images.append(figure)
            processed.infotexts.append(caption)
            if getattr(shared.opts, "tsam_save_diagnostics", False):
                images.save_image(figure, p.outpath_samples, "", p.all_seeds[index], p.all_prompts[index],
                                  shared.opts.samples_format, info=caption, p=p, suffix="-tsam")
