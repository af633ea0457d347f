"""Mirrors Forge's modules/sd_hijack.py, which keeps A1111's ``model_hijack`` object for
extensions (its ``extra_generation_params`` are read after conds are built): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_hijack.py", globals())
