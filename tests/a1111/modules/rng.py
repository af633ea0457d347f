"""Mirrors modules/rng.py (CPU / GPU sources; not the "NV" philox source, not subseeds or seed
resize): ``randn`` seeds the global generator (``manual_seed``) before drawing, so after the
first noise of a batch the global generator is at ``seed`` of its last image, as in the WebUI;
``ImageRNG`` keeps one generator per seed; ``next()`` gives the initial noise first, then the
samplers' extra noise."""

import torch

from modules import shared


def manual_seed(seed):
    torch.manual_seed(seed)


def create_generator(seed):
    return torch.Generator().manual_seed(int(seed))


def randn(seed, shape, generator=None):
    manual_seed(seed)
    return torch.randn(shape, generator=generator)


def randn_without_seed(shape, generator=None):
    return torch.randn(shape, generator=generator)


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def first(self):
        xs = [randn(seed, self.shape, generator=generator) for seed, generator in zip(self.seeds, self.generators)]
        delta = getattr(shared.opts, "eta_noise_seed_delta", 0) or 0
        if delta:
            self.generators = [create_generator(seed + delta) for seed in self.seeds]
        return torch.stack(xs)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn_without_seed(self.shape, generator=g) for g in self.generators])
