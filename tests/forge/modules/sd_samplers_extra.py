"""Mirrors Forge's modules/sd_samplers_extra.py (``restart_sampler``): identical to A1111 1.10.1: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_samplers_extra.py", globals())
