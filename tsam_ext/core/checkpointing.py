"""Activation checkpointing over the UNet's transformer blocks, for a guidance pass that must fit.

Inside ``checkpointed(unet)`` each transformer block (class ``BasicTransformerBlock``: ldm's,
sgm's and Forge's share the name) keeps only its inputs during the forward and recomputes its
activations when the backward reaches it (torch's non-reentrant checkpoint). The gradient is the
same; the memory of the transformer blocks' activations, most of a pass's, is not held; their
forward runs twice. The recorder's own tensors stay outside the checkpoint (see
``recorder.keep_saved``), so recording, truncation and checkpointing compose.

Per instance, for the scope only: ``block.forward`` is shadowed by a wrapper around whatever
forward the block had on entry (its class's, or another extension's), then restored.

A block's recompute must see the arguments its forward saw. Forge passes every block the same
``transformer_options`` dict and rewrites its ``block`` / ``block_index`` before each block
(backend/nn/unet.py), so by the backward the dict names the last block: each dict argument is
therefore given to the block as a shallow copy taken at its call, the same in the forward and in
the recompute.
"""

import functools
from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

BLOCK = "BasicTransformerBlock"


def _frozen(value):
    return dict(value) if isinstance(value, dict) else value


def _checkpointed(forward, *args, **kwargs):
    args, kwargs = tuple(map(_frozen, args)), {k: _frozen(v) for k, v in kwargs.items()}
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextmanager
def checkpointed(unet: torch.nn.Module):
    """Scope in which every transformer block of ``unet`` runs checkpointed; yields how many."""
    blocks = [m for m in unet.modules() if type(m).__name__ == BLOCK]
    shadowed = [(b, vars(b).get("forward")) for b in blocks]
    for b in blocks:
        b.forward = functools.partial(_checkpointed, b.forward)
    try:
        yield len(blocks)
    finally:
        for b, own in shadowed:
            if own is None:
                del b.forward
            else:
                b.forward = own
