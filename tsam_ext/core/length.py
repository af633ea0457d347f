"""Length scaling: a guided step of the same size for a prompt of any length, chunks and sub-prompts.

The authors tuned alpha and the refinement threshold on prompts of 4-7 tokens. Summed as they
wrote it, the reference loss of a chunk of n tokens is sum_{i=2..n} w_i (1 - cos_i) with
w_i = 0.2 (i - 1): its rows' total weight W(n) = 0.1 n (n - 1) grows as n^2, and an image's loss
sums its chunks (75 tokens each) and AND sub-prompts (rows of their own) on top.

The rule ("normalised") divides an image's loss by the size of its gradient in z relative to a
7-token chunk's, ``chunk_size``, measured on the real UNets with random peaky weights
(bench/length_table.py, docs/length.md):

- reference loss: a chunk weighs W(n) / W(7). Row i's cosine term has a gradient of size about
  w_i / sqrt(i - 1) in C, and on the cross-attention maps the rows' gradients are nearly
  independent (|dL/dmaps| grows as sqrt(W(n)): 16x from 7 to 75 tokens); through the UNet they
  add up in the same direction in z: |dL/dz| / W(n) stayed within 2.4x from 5 to 150 tokens on
  SD 1.x while |dL/dz| itself grew 400x, and 2 chunks of 75 gave 1.8x one's;
- paper loss: a chunk weighs sqrt(Q(n) / Q(7)), Q(n) = sum_{i=1..n} (i / n)^2 the square norm of
  its row weights. Its L1 terms compare row-normalised S with T, so a longer row's entries each
  get a smaller gradient and their signs partly cancel: |dL/dz| grew 2.7x from 7 to 75 tokens on
  SD 1.x, sqrt(Q(75) / Q(7)) = 3.0;
- the chunks and rows (AND sub-prompts) of one image add up in z like one chunk's rows: their
  sizes are summed.

An image whose chunks weigh ``m`` in all gets its loss divided by m when m > 1, and is left
exactly as it is when m <= 1: one chunk of up to 7 tokens (the reference prompts, 4-7 tokens)
keeps the reference's loss, gradient and latents bit for bit. The loss so scaled is W(7) times
the mean (1 - cos) per unit row weight (reference loss): "low" means the same at every length.
"reference" is the authors' sum.

Token counts n are the chunks' T sizes (``ChunkTarget.n``), the tokens the loss compares:
emphasis changes no count, an embedding counts its vectors, padding counts nothing.
"""

from typing import Iterable

from .loss import MIN_TOKENS
from .schedule import THRESHOLD_PER_ROW, refinement_threshold

SCALINGS = ("normalised", "reference")
REFERENCE_TOKENS = 7  # the longest prompts the authors ran ("a black car and a white clock")


def row_weight(n: int) -> float:
    """W(n) = sum_{i=2..n} 0.2 (i - 1) = 0.1 n (n - 1): the reference loss's total row weight."""
    return 0.1 * n * max(n - 1, 0)


def paper_row_weight(n: int) -> float:
    """Q(n) = sum_{i=1..n} (i / n)^2: the square norm of the paper loss's row weights i / n."""
    return (n + 1) * (2 * n + 1) / (6 * n) if n > 0 else 0.0


def chunk_size(n: int, loss: str) -> float:
    """How many 7-token chunks' gradients a chunk of n tokens weighs (see the module's derivation)."""
    if loss == "reference":
        return row_weight(n) / row_weight(REFERENCE_TOKENS)
    return (paper_row_weight(n) / paper_row_weight(REFERENCE_TOKENS)) ** 0.5


def guided_counts(token_counts: Iterable[int], loss: str) -> list[int]:
    """The token counts of the chunks that have a loss term (``MIN_TOKENS`` or more)."""
    return [n for n in token_counts if n >= MIN_TOKENS[loss]]


def loss_factor(token_counts: Iterable[int], loss: str = "reference", scaling: str = "normalised") -> float:
    """The factor on an image's summed loss, from the token counts of all its chunks (every AND
    sub-prompt's): 1 / m for m = the sum of their ``chunk_size`` when m > 1, else exactly 1."""
    if scaling not in SCALINGS:
        raise ValueError(f"length scaling must be one of {SCALINGS}, got {scaling!r}")
    if scaling == "reference":
        return 1.0
    m = sum(chunk_size(n, loss) for n in guided_counts(token_counts, loss))
    return 1.0 if m <= 1 else 1.0 / m


def chunk_threshold(n: int, loss: str = "reference") -> float:
    """The refinement threshold of one chunk before scaling: the reference's 0.14 (n - 1) up to 7
    tokens, beyond them the 7-token one (0.84) times the chunk's size (reference loss: the same
    loss per unit row weight, 0.2 W(n)), so that one long chunk's scaled threshold is 0.84."""
    if n <= REFERENCE_TOKENS:
        return THRESHOLD_PER_ROW * max(n - 1, 0)
    return THRESHOLD_PER_ROW * (REFERENCE_TOKENS - 1) * chunk_size(n, loss)


def threshold(token_counts: Iterable[int], loss: str = "reference", scaling: str = "normalised") -> float:
    """The refinement stop threshold an image's (scaled) loss is compared with.

    "reference": ``schedule.refinement_threshold`` (0.14 per row, summed over chunks). "normalised":
    the sum of ``chunk_threshold`` over the chunks with a loss, times ``loss_factor``, the loss's
    own: a reference loss is "low" at the same (1 - cos) per unit row weight at every length. The
    paper loss gets the same rule, as it gets the reference's threshold (the authors calibrated
    it on the reference loss only).
    """
    counts = list(token_counts)
    if scaling == "reference":
        return refinement_threshold(counts)
    guided = guided_counts(counts, loss)
    return loss_factor(guided, loss, scaling) * sum(chunk_threshold(n, loss) for n in guided)
