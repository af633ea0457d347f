"""One sampling pass under T-SAM: which model calls are guided, and the update that moves the
sampler's own latent. Host-free: a host (the WebUI adapter, the standalone runner) calls
``begin_call`` on every model call, ``guide`` when it returns a step, and ``end_step`` from the
sampler's step callback. All state lives here and dies with the pass.
"""

from dataclasses import dataclass, field
from typing import Callable

import torch

from .guidance import TOO_SHORT, BatchLimit, GradientBlocked, RowTarget, StepOutcome, guidance_step, is_out_of_memory
from .memory_plan import PassTooLarge, fit, free_bytes, image_rows
from .recorder import MapsNotRecorded, Recorder
from .samplers import SamplerProfile
from .schedule import Plan


@dataclass
class StepTrace:
    """What one guided step did, per image: the loss of each pass, and why an image was skipped."""
    step: int
    alpha: float
    passes: int
    losses: dict[int, list[float]]
    skipped: dict[int, str]
    rows: list[RowTarget]
    maps: dict[int, torch.Tensor]  # row -> maps [gh, gw, S] of the step's first pass (kept on request)


@dataclass
class GuidedPass:
    plan: Plan
    profile: SamplerProfile
    recorder: Recorder
    loss: str = "reference"
    length: str = "normalised"  # length scaling of the loss (core.length)
    smooth: bool = True
    truncate: bool = True
    should_stop: Callable[[], bool] | None = None
    keep_maps: bool = False
    log: Callable[[str], None] = print
    trace: list[StepTrace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped: str | None = None
    calls: int = 0
    callbacks: int = 0
    calls_since_callback: int = 0
    pending: torch.Tensor | None = None
    limit: BatchLimit = field(default_factory=BatchLimit)
    explain: Callable[[], str | None] = lambda: None  # the host's word on what cut a missing map or gradient
    # peak bytes of a pass over the images of z with these rows, checkpointed or not (memory_plan.pass_peak)
    estimate: Callable[[torch.Tensor, list[RowTarget], bool], int] | None = None
    memory_fitted: bool = False

    def begin_call(self) -> int | None:
        """Count a model call; the sampler step it starts if that step is to be guided, else None."""
        self.calls += 1
        self.calls_since_callback += 1
        step = self.profile.step_of_call(self.calls, self.callbacks, self.calls_since_callback)
        if step is None or not self.plan.guides(step) or self.stopped:
            return None
        return step

    def end_step(self, d: dict | None = None) -> None:
        """The sampler's step callback. A sampler that rebuilt its latent without the move of a
        guided call (UniPC's B(h) corrector) gets the move on the latent it reports and continues
        from; one whose rebuilt latent kept it (vary_coeff at order 1) does not get it twice."""
        self.callbacks += 1
        self.calls_since_callback = 0
        if self.pending is not None and d is not None and isinstance(d.get("x"), torch.Tensor):
            d["x"].add_(self.pending.to(d["x"].dtype))
        self.pending = None

    def guide(self, x: torch.Tensor, step: int, rows: list[RowTarget],
              run_unet: Callable[[torch.Tensor, list[int]], object], c_in: torch.Tensor,
              movable: torch.Tensor | None = None) -> StepOutcome | None:
        """Move the sampler's latent ``x`` [B, C, h, w] in place by one guidance step on z = x * c_in
        (``movable``: see ``guidance_step``).

        Never raises for a failure of the guidance itself: out-of-memory ends guidance for the
        rest of the pass, any other error too, each with a warning (and, for missing maps or
        gradients, the host's ``explain``); the sampler goes on.
        """
        alpha = float(self.plan.alphas[step])
        keep = self.keep_maps and step in (self.plan.guided[0], self.plan.guided[-1])
        c_in = c_in.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
        if not self.memory_fitted:
            self.memory_fitted = True
            if not self.fit_memory(x, rows):
                return None
        try:
            out = guidance_step(x.float() * c_in, rows, run_unet, self.recorder, alpha, loss=self.loss,
                                smooth=self.smooth, refinement=self.plan.refinement_for(step),
                                truncate=self.truncate, should_stop=self.should_stop, limit=self.limit,
                                keep_maps=keep, movable=movable, length=self.length)
        except Exception as e:  # noqa: BLE001 - a guidance failure must never cost the image
            oom = is_out_of_memory(e)
            self.stopped = "out of memory" if oom else f"{type(e).__name__}: {e}"
            if isinstance(e, (MapsNotRecorded, GradientBlocked)):
                self.stopped += f" ({self.explain() or 'no other extension was found in the UNet call'})"
            self.warn(f"guidance stopped at step {step + 1}: {self.stopped}; the rest of this pass is unguided"
                      + (" (lower the batch size or resolution)" if oom else ""))
            if oom and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return None
        dx = out.delta / c_in
        x.add_(dx.to(x.dtype))
        if self.profile.rebuilds_without_move(self.calls):
            self.pending = dx
        self.trace.append(StepTrace(step, alpha, out.passes, out.losses, out.skipped, list(rows), out.maps))
        self._report(step, out)
        return out

    def fit_memory(self, x: torch.Tensor, rows: list[RowTarget]) -> bool:
        """Before the pass's first guided step, where the device says what it has free: the images
        per pass and checkpointing from the estimate (``memory_plan.fit``). False: no pass fits,
        guidance stops for this pass. A failed estimate leaves the limit as it was."""
        free = free_bytes(x.device) if self.estimate is not None else None
        guided = [r for r in rows if r.guided(self.loss)]
        images = len({r.image for r in guided})
        if free is None or not images:
            return True
        peaks: dict[tuple[int, bool], int] = {}

        def peak(k: int, checkpoint: bool) -> int:
            if (k, checkpoint) not in peaks:
                peaks[k, checkpoint] = self.estimate(x[:k], image_rows(guided, k), checkpoint)
            return peaks[k, checkpoint]

        try:
            self.limit, note = fit(peak, images, free, self.limit)
        except PassTooLarge as e:
            self.stopped = str(e)
            self.warn(f"{e}: this pass is unguided (lower the batch size or resolution)")
            return False
        except Exception as e:  # noqa: BLE001 - the estimate is an aid; the out-of-memory chain remains
            self.warn(f"memory estimate failed ({type(e).__name__}: {e}); guidance falls back if it runs out of memory")
            return True
        if note:
            self.warn(note)
        return True

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            self.log(f"T-SAM: {message}")

    def _report(self, step: int, out: StepOutcome) -> None:
        for note in out.notes:
            self.warn(note)
        for img, reason in sorted(out.skipped.items()):
            if reason in TOO_SHORT.values():  # the same at every step: say it once
                self.warn(f"image {img + 1}: {reason}; nothing to bind, so it is not guided")
            else:
                self.warn(f"image {img + 1}, step {step + 1}: {reason}; step skipped")
        if out.losses:
            first = sum(h[0] for h in out.losses.values())
            last = sum(h[-1] for h in out.losses.values())
            change = f"{first:.4f} -> {last:.4f} in {out.passes} passes" if out.passes > 1 else f"{first:.4f}"
            self.log(f"T-SAM step {step + 1}/{self.plan.guided[-1] + 1}: loss {change}")

    def loss_summary(self) -> dict[int, tuple[float, float]]:
        """Per image: the loss at its first guided pass and at its last."""
        first, last = {}, {}
        for t in self.trace:
            for img, h in t.losses.items():
                first.setdefault(img, h[0])
                last[img] = h[-1]
        return {img: (first[img], last[img]) for img in first}
