"""When and how far to step: step sizes, guided steps, refinement points and the stop rule.

Step indices count sampler steps (0 = the noisiest), never UNet evaluations.

The user's "first X%" and the refinement points at 0/20/40% are fractions of the denoising the
sampler is asked for: of the N steps of the schedule it receives (its nominal schedule). Where
the sampler runs exactly those steps, step t of the pass is nominal step t. Where it runs other
steps (Restart shortens the schedule and inserts restart segments that add noise back), the
fractions are read as noise levels: guidance covers the noise from the start down to the level
at nominal step round(X% N); each level is guided at most once, on the sampler's first pass
through it (a step that starts above a level the pass has already reached revisits noise it
has guided or passed; it is not guided).
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


TOLERANCE = 1e-5  # relative: a sampler may recompute a level of its schedule (Restart's sigma_max) to within rounding


@dataclass(frozen=True)
class PassSteps:
    """The steps of a sampling pass as noise levels (any scale that grows with the noise).

    ``nominal`` [N + 1] are the levels of the schedule the sampler function receives (N steps,
    descending); ``runs`` [M] are the (start, end) levels of each step the sampler actually
    runs, in order. Samplers that run what they receive have runs[t] = (nominal[t], nominal[t + 1]).
    """
    nominal: tuple[float, ...]
    runs: tuple[tuple[float, float], ...]

    @classmethod
    def counted(cls, num_steps: int) -> "PassSteps":
        """A pass that runs the N steps it is given: levels N, N - 1, ..., 0."""
        levels = tuple(float(num_steps - t) for t in range(num_steps + 1))
        return cls(levels, tuple(zip(levels[:-1], levels[1:])))

    @property
    def requested(self) -> int:
        return len(self.nominal) - 1

    def first_visits(self) -> list[bool]:
        """Per step run: whether it starts at or below every level the pass has reached so far
        (False for a step after the sampler added noise back, until it is below that again)."""
        reached, first = math.inf, []
        for start, end in self.runs:
            first.append(not _above(start, reached))
            reached = min(reached, end)
        return first


@dataclass(frozen=True)
class Plan:
    """What one sampling pass of ``steps`` sampler steps does: the steps in ``guided`` (ascending)
    are guided with ``alphas[t]``; those in ``refine_at`` are refined with ``refinement``."""
    steps: int
    guided: tuple[int, ...]
    alphas: torch.Tensor
    refine_at: frozenset[int]
    refinement: Refinement | None

    def guides(self, step: int) -> bool:
        return step in self.guided

    def refinement_for(self, step: int) -> Refinement | None:
        return self.refinement if step in self.refine_at else None


def make_plan(steps: "int | PassSteps", alpha: float, guided_fraction: float,
              refinement: Refinement | None = Refinement()) -> Plan:
    """The plan of a pass of ``steps``: a count when the sampler runs the steps it is given, else
    its PassSteps. Guided: the steps that start above the level of nominal step
    ``fraction_of(N, guided_fraction)`` on their first visit of that noise. A step's alpha is
    that of the nominal step its start lies in; the refinement at nominal step r falls on the
    last guided step that starts at or above r's level (the step under way when the pass reaches it).
    With a count this is: steps 0 .. round(X% N) - 1, alpha_t, and refinement at the nominal steps.
    """
    levels = PassSteps.counted(steps) if isinstance(steps, int) else steps
    n = levels.requested
    last = fraction_of(n, guided_fraction)
    starts = [start for start, _ in levels.runs]
    guided = tuple(k for k, first in enumerate(levels.first_visits()) if first and _above(starts[k], levels.nominal[last]))
    nominal_step = [max((j for j in range(n) if not _above(s, levels.nominal[j])), default=0) for s in starts]
    alphas = step_sizes(alpha, n)[nominal_step] if n else torch.zeros(len(starts), dtype=torch.float64)
    refine_at = set()
    for r in refinement_steps(n, last) if refinement else ():
        under_way = [k for k in guided if not _above(levels.nominal[r], starts[k])]
        refine_at.update(under_way[-1:])
    return Plan(len(starts), guided, alphas, frozenset(refine_at), refinement)


def _above(level: float, other: float) -> bool:
    """level > other beyond rounding (so a recomputed level equals the one it stands for)."""
    return level > other * (1 + TOLERANCE)
