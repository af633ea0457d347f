"""Steering one sampling pass of the WebUI: wrappers on this pass's sampler object only. The
samplers, their CFG denoiser and the prompt conds are A1111's in both hosts; how the UNet is
run for the guidance pass is the backend's (``SamplingPass.recorder_for`` / ``guide``).

``install`` runs in ``process_before_every_sampling``, when the pass's sampler exists. It sets
two instance attributes that shadow the class's methods and die with the sampler:
- ``sampler.func``, the sampler function: reads how many steps this pass makes from the
  arguments it receives (img2img and hires count the steps actually run), chains the step
  callback, and removes both wrappers when sampling ends, however it ends. It keeps the
  function's signature: the WebUI chooses the arguments it passes by inspecting it;
- ``sampler.model_wrap_cfg.forward``, the CFG denoiser: on the first model call of a guided
  step it moves the sampler's own latent ``x`` in place (so the change persists in the
  sampler's state), then calls whatever forward was there before (other extensions' included).
"""

import functools
import inspect
import types

import torch

from modules import devices, prompt_parser, shared

from ..core.controller import GuidedPass
from ..core.guidance import BatchLimit, RowTarget, StepOutcome
from ..core.recorder import Recorder
from ..core.samplers import pass_steps, profile_for
from . import prompts

INSTALLED = "tsam_pass"  # on the sampler while its wrappers are in place


def _forward_parameters(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
    """The upstream ``CFGDenoiser.forward`` signature; samplers call ``model(x, sigma, **extra_args)``."""


FORWARD = inspect.signature(_forward_parameters)


def model_key(sd_model) -> tuple:
    """Which checkpoint is loaded: a refiner or hires checkpoint is another object, or the same
    object with other weights (and another hash)."""
    return id(sd_model), getattr(sd_model, "sd_model_hash", None)


def per_image(t: torch.Tensor, batch: int) -> torch.Tensor:
    """A mask or latent [C, h, w] or [1 | B, C, h, w] as [B, C, h, w]."""
    t = t if t.dim() == 4 else t[None]
    return t.expand(batch, *t.shape[1:])


class SamplingPass:
    """One pass (txt2img, hires or img2img) of one batch under T-SAM."""

    def __init__(self, job, p, hires: bool):
        self.job, self.p, self.hires = job, p, hires
        self.sampler = p.sampler
        self.denoiser = p.sampler.model_wrap_cfg
        self.schedules = prompts.schedules(p, hires)
        self.model = model_key(shared.sd_model)  # the checkpoint guidance reads
        self.texts = job.texts_for(shared.sd_model)  # a hires checkpoint has its own text encoder
        self.texts.prepare(self.all_texts())
        self.guided: GuidedPass | None = None

    def all_texts(self):
        return (t for image in self.schedules for sub in image for _end, t in sub)

    def recorder_for(self, sd_model) -> Recorder:
        """The recorder of the UNet of the checkpoint ``sd_model``."""
        raise NotImplementedError

    def guide(self, x: torch.Tensor, step: int, rows: list[RowTarget], sigma: torch.Tensor, cond,
              image_cond) -> StepOutcome | None:
        """Move the sampler's latent ``x`` in place by guided step ``step`` (``GuidedPass.guide``),
        with this host's UNet call for the rows' ``cond`` at the sampler's ``sigma``."""
        raise NotImplementedError

    def install(self) -> None:
        sampler, denoiser = self.sampler, self.denoiser
        if getattr(sampler, INSTALLED, None) is not None:  # Forge's hires fix calls the hook twice per sampler
            return
        original_func, original_forward = sampler.func, denoiser.forward
        had_func, had_forward = "func" in vars(sampler), "forward" in vars(denoiser)
        this = self

        def restore():
            if had_func:
                sampler.func = original_func
            else:
                vars(sampler).pop("func", None)
            if had_forward:
                denoiser.forward = original_forward
            else:
                vars(denoiser).pop("forward", None)
            vars(sampler).pop(INSTALLED, None)

        @functools.wraps(original_func)  # the WebUI picks the kwargs it passes from the signature
        def func(model, x, *args, **kwargs):
            try:
                try:
                    this.start(kwargs)
                    kwargs["callback"] = this.step_callback(kwargs.get("callback"))
                except Exception as e:  # noqa: BLE001 - sample unguided rather than not at all
                    this.stop(f"{type(e).__name__}: {e}")
                return original_func(model, x, *args, **kwargs)
            finally:
                try:
                    restore()
                    this.job.end_pass(this)
                except Exception as e:  # noqa: BLE001 - the sampler's result must reach the WebUI
                    this.job.warn(f"{type(e).__name__} while ending the sampling pass: {e}")

        def forward(self_, *args, **kwargs):
            try:
                this.maybe_guide(FORWARD.bind(*args, **kwargs).arguments)
            except Exception as e:  # noqa: BLE001 - an exception here would abort the generation
                this.stop(f"{type(e).__name__}: {e}")
            return original_forward(*args, **kwargs)

        sampler.func = func
        denoiser.forward = types.MethodType(forward, denoiser)
        setattr(sampler, INSTALLED, self)

    def step_callback(self, callback):
        """The sampler's step callback, after T-SAM's own bookkeeping of the step (``end_step``)."""
        def step_done(d):
            if self.guided is not None:
                try:
                    self.guided.end_step(d)
                except Exception as e:  # noqa: BLE001 - an exception here would abort the generation
                    self.stop(f"{type(e).__name__} at the end of a step: {e}")
            return None if callback is None else callback(d)
        return step_done

    def stop(self, reason: str) -> None:
        """No more guidance in this pass; the sampler goes on."""
        if self.guided is None:
            self.job.warn(f"guidance could not run: {reason}")
            return
        self.guided.stopped = reason
        self.guided.warn(f"guidance stopped: {reason}; the rest of this pass is unguided")

    def start(self, kwargs: dict) -> None:
        steps = pass_steps(self.sampler.funcname, kwargs, self.denoiser.steps or self.p.steps)
        profile = profile_for(self.sampler.funcname, bool(self.sampler.config and self.sampler.config.options.get("second_order")),
                              unipc=(shared.opts.uni_pc_variant, shared.opts.uni_pc_order), kwargs=kwargs)
        self.guided = GuidedPass(self.job.plan(steps), profile, self.recorder_for(shared.sd_model),
                                 loss=self.job.settings.loss, length=self.job.settings.length_scaling,
                                 smooth=self.job.settings.smoothing,
                                 should_stop=lambda: shared.state.interrupted or shared.state.skipped,
                                 keep_maps=self.job.settings.diagnostics, log=self.job.log,
                                 limit=BatchLimit(getattr(shared.opts, "tsam_max_batch", 0) or None,
                                                  checkpoint=bool(getattr(shared.opts, "tsam_checkpoint", False))))

    def resume_sampling(self, x: torch.Tensor) -> None:
        """Load back what the sampler holds, after T-SAM loaded a text encoder in the middle of
        sampling (``x``: the sampler's latent). Nothing to do where the host moves models when
        they are called (A1111's low-VRAM modes)."""

    def follow_model(self, step: int, x: torch.Tensor) -> bool:
        """Keep guidance on the checkpoint that is loaded now. The WebUI may switch to a refiner
        in the middle of sampling (``apply_refiner`` in the CFG denoiser: new weights, in the same
        model object or another one, new conds, a new inner model); the call that switches is
        guided on the checkpoint it started with, every later one on the refiner, with its own
        cross-attention layers and its own text target, or not at all if T-SAM cannot guide it.
        Guided steps are the first ones, so the switch happened in the step before ``step``
        (0-based), i.e. in step ``step`` counted from 1. False when guidance has stopped."""
        from .job import unsupported_model  # job imports the backends, which import this module

        model = shared.sd_model
        if model_key(model) == self.model:
            return True
        name = getattr(getattr(model, "sd_checkpoint_info", None), "short_title", None) or "another checkpoint"
        reason = unsupported_model(model)
        if reason is not None:
            self.stop(f"the refiner {name} took over in step {step}, and {reason}")
            return False
        self.guided.recorder = self.recorder_for(model)
        self.texts = self.job.texts_for(model)
        self.texts.prepare(self.all_texts())
        self.resume_sampling(x)
        self.model = model_key(model)
        self.job.log(f"T-SAM: the refiner {name} took over in step {step}; guidance goes on from step {step + 1} "
                     f"with its own layers and text target")
        return True

    def maybe_guide(self, args: dict) -> None:
        if self.guided is None:
            return
        step = self.guided.begin_call()
        if step is None or shared.state.interrupted or shared.state.skipped or not self.follow_model(step, args["x"]):
            return
        cond = args["cond"]
        call = self.denoiser.step
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, call)
        rows: list[RowTarget | None] = [None] * tensor.shape[0]
        for i, subprompts in enumerate(conds_list):
            for j, (row, _weight) in enumerate(subprompts):
                active = prompts.active_text(self.schedules[i][j], cond.batch[i][j].schedules, call)
                if active is None:
                    self.guided.warn("the prompt schedule does not match the conditioning; that prompt is not guided")
                rows[row] = RowTarget(i, self.texts[active] if active is not None else ())
        x = args["x"]
        # the sampler's and other extensions' random streams go on as without T-SAM: an extension
        # in the UNet call (ControlNet's reference-only) may draw from the global generator
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            outcome = self.guide(x, step, rows, args["sigma"], tensor, args["image_cond"])
        if outcome is None:
            devices.torch_gc()
