"""Mirrors modules/rng.py ``ImageRNG``: one generator per seed; ``next()`` draws the batch's
next noise (the first call gives the initial noise, later ones the samplers' extra noise)."""

import torch


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(shape)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
