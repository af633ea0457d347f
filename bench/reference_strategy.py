"""The authors' reference implementation's cost strategy, as a ``GuidedPass`` for the benchmark.

Same guidance maths, settings and refinement rule as T-SAM (the core's ``guidance_step`` does
every update), but run the way the reference runs it:

- the full UNet forward (no truncation after the last latent/4 cross-attention layer);
- one image at a time (the reference loops over the batch);
- UNet parameters keep ``requires_grad=True`` during guidance: the reference calls
  ``torch.autograd.grad(loss, [latents])`` on an unfrozen UNet, so autograd keeps, for every
  layer, the activations a weight gradient would need;
- at each refinement step one extra forward whose loss is thrown away: the reference computes
  the step's loss in its main loop, then the refinement restarts from the same latent.

The baseline is conservative: it does not model graphs the reference may keep alive longer
(``retain_graph=True``), so the reference's real cost can only be higher.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tsam_ext.core.controller import GuidedPass
from tsam_ext.core.guidance import BatchLimit, RowTarget, StepOutcome, row_losses


@contextmanager
def weight_gradients(module: torch.nn.Module):
    """Every parameter requires a gradient inside the scope (the core's ``frozen`` turned them off)."""
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


@dataclass
class ReferenceStrategyPass(GuidedPass):
    """``make_pass`` for ``pipeline.generate``: T-SAM's guidance at the reference's cost."""
    discarded: int = 0  # main-loop forwards thrown away at refinement steps

    def __post_init__(self):
        # The strategy, whatever the caller asked for: full pass, one image per UNet call.
        self.truncate = False
        self.limit = BatchLimit(images=1)

    def guide(self, x: torch.Tensor, step: int, rows: list[RowTarget], run_unet,
              c_in: torch.Tensor) -> StepOutcome | None:
        """The core's update, each UNet forward recording weight-gradient activations; a
        refinement step first makes the reference's discarded main-loop forward."""
        def run(z, ids):
            # Autograd records requires_grad at each op, so enabling it for the forward is enough.
            with weight_gradients(self.recorder.unet):
                return run_unet(z, ids)

        if self.plan.refinement_for(step) is not None and not self.stopped:
            z = x.float() * c_in.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
            self._discarded_loss(z, rows, run)
        return super().guide(x, step, rows, run, c_in)

    def _discarded_loss(self, z: torch.Tensor, rows: list[RowTarget], run_unet) -> None:
        """One full forward with a graph, and its loss, per image; nothing is kept."""
        with torch.enable_grad():
            for img in sorted({r.image for r in rows}):
                ids = [i for i, r in enumerate(rows) if r.image == img and r.guided(self.loss)]
                if not ids:
                    continue
                leaf = z[[img]].detach().requires_grad_(True)
                maps = self.recorder.run(lambda: run_unet(leaf[[0] * len(ids)], ids), tuple(z.shape[-2:]),
                                         truncate=False)
                row_losses(maps, [rows[i] for i in ids], self.loss, self.smooth)
                self.discarded += 1
