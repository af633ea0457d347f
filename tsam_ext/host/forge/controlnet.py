"""T-SAM's guidance pass and Forge's built-in ControlNet. Follows backend/patcher/controlnet.py
(Forge dfdcbab6): ``ControlNet.get_control``, ``T2IAdapter.get_control``, ``broadcast_image_to``.

The pass runs the ControlNets as sampling does (``unet_call``: ``get_control`` in
``calc_cond_uncond_batch``), with gradients: a ControlNet reads the latent, so its model is in
the pass's ``trainable`` scope (``models``). What ``get_control`` keeps between calls must not
be changed by the pass: ``cond_hint`` (the hint resized to the latent and broadcast to the call's
batch) and a T2I-Adapter's ``control_input`` (its features of that hint). And for a batch of
hints (one per image), its broadcast picks the first ``batch // batched_number`` hints: right
for sampling's [uncond, cond ...] batch of every image, wrong for a pass over some images' cond
rows. So inside ``rows`` each ControlNet of the list gets, as its original hint, the hints of
the pass's images (image i's as sampling gives it: ``broadcast_image_to`` to the batch) and no
cached hint or features, so ``get_control`` builds them for these rows; afterwards it gets back
what it had, and the sampler's next call finds it as without T-SAM.
"""

from contextlib import contextmanager

import torch

from backend.patcher.controlnet import broadcast_image_to

from ..attributes import restored

CACHED = ("cond_hint_original", "cond_hint", "control_input")


def models(patcher) -> list[torch.nn.Module]:
    """The models of the patcher's ControlNets that read the latent (a T2I-Adapter does not)."""
    return [c.control_model for c in patcher.list_controlnets() if isinstance(getattr(c, "control_model", None), torch.nn.Module)]


@contextmanager
def rows(patcher, images: list[int], batch: int):
    """Scope of one UNet call of the pass over rows of ``images`` (of a batch of ``batch``)."""
    cnets = patcher.list_controlnets()
    with restored([(c, name) for c in cnets for name in CACHED if hasattr(c, name)]):
        for c in cnets:
            hint = c.cond_hint_original
            if isinstance(hint, torch.Tensor) and hint.shape[0] > 1:
                c.cond_hint_original = broadcast_image_to(hint, batch, 1)[images]
            c.cond_hint = None
            if hasattr(c, "control_input"):
                c.control_input = None
        yield
