"""When and how far to step: step sizes, guided steps, refinement points and the stop rule.

Step indices count sampler steps (0 = the noisiest), never UNet evaluations.
"""

import math
from dataclasses import dataclass

import torch

REFINE_AT = (0.0, 0.2, 0.4)   # the reference's steps 0, 10, 20 of 50, as fractions of the steps
THRESHOLD_PER_ROW = 0.14      # the reference's thresholds {5: 0.14*4, 6: 0.14*5, 7: 0.14*6} are 0.14 (n - 1)


def step_sizes(alpha: float, num_steps: int) -> torch.Tensor:
    """alpha_t [num_steps] (float64) = alpha * sqrt(linspace(1.0, 0.5, num_steps)[t])."""
    return alpha * torch.linspace(1.0, 0.5, num_steps, dtype=torch.float64).sqrt()


def fraction_of(num_steps: int, fraction: float) -> int:
    """Round fraction * num_steps half up: 60% of 50 is 30, of 20 is 12, of 25 is 15."""
    return min(num_steps, max(0, math.floor(fraction * num_steps + 0.5 + 1e-9)))


def refinement_steps(num_steps: int, guided: int, at: tuple[float, ...] = REFINE_AT) -> frozenset[int]:
    """The guided steps at which the update is refined (0/20/40% of the steps, as the reference)."""
    return frozenset(s for s in (fraction_of(num_steps, f) for f in at) if s < guided)


def refinement_threshold(token_counts) -> float:
    """The reference's stop threshold generalised to any prompt: 0.14 per row with a loss term.

    The reference hard-codes 0.56 / 0.70 / 0.84 for 5 / 6 / 7 prompt tokens, i.e. 0.14 (n - 1);
    a prompt of several chunks (or AND sub-prompts) sums its chunks' rows.
    """
    return THRESHOLD_PER_ROW * sum(max(n - 1, 0) for n in token_counts)


@dataclass(frozen=True)
class Refinement:
    """The reference's iterative refinement, with an optional early stop.

    ``iterations`` updates are made; if the loss of the last of them is still at or below
    ``threshold_scale`` times the threshold, ``extra`` more follow (the reference: 20, then up to
    30 only for a loss below its threshold). Only with ``early_stop`` (the user's "Stop refinement
    early", off by default: off makes exactly the reference's count) does an image whose loss
    changed by less than ``tolerance`` (relative) over the last ``patience`` updates stop refining
    at once.
    """
    iterations: int = 20
    extra: int = 10
    tolerance: float = 1e-3
    patience: int = 3
    threshold_scale: float = 1.0
    early_stop: bool = False

    def extend(self, loss: float, threshold: float) -> bool:
        return self.extra > 0 and loss <= self.threshold_scale * threshold

    def converged(self, history: list[float]) -> bool:
        if not self.early_stop or self.tolerance <= 0 or len(history) <= self.patience:
            return False
        old, new = history[-1 - self.patience], history[-1]
        return abs(old - new) <= self.tolerance * abs(old)


@dataclass(frozen=True)
class Plan:
    """What one sampling pass of ``steps`` sampler steps does: steps t < ``guided`` are guided
    with ``alphas[t]``; those in ``refine_at`` are refined with ``refinement``."""
    steps: int
    guided: int
    alphas: torch.Tensor
    refine_at: frozenset[int]
    refinement: Refinement | None

    def refinement_for(self, step: int) -> Refinement | None:
        return self.refinement if step in self.refine_at else None


def make_plan(num_steps: int, alpha: float, guided_fraction: float,
              refinement: Refinement | None = Refinement()) -> Plan:
    guided = fraction_of(num_steps, guided_fraction)
    refine_at = refinement_steps(num_steps, guided) if refinement else frozenset()
    return Plan(num_steps, guided, step_sizes(alpha, num_steps), refine_at, refinement)
