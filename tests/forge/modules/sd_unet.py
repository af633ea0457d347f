"""Mirrors Forge's modules/sd_unet.py, unchanged from A1111's: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_unet.py", globals())
