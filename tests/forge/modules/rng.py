"""Mirrors Forge's modules/rng.py (``ImageRNG``): Forge adds only the NPU/XPU generator paths: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/rng.py", globals())
