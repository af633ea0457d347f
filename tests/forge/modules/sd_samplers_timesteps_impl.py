"""Mirrors Forge's modules/sd_samplers_timesteps_impl.py (ddim, plms, unipc): identical to A1111 1.10.1: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_samplers_timesteps_impl.py", globals())
