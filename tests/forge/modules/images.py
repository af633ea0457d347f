"""Mirrors Forge's modules/images.py (``save_image``): unchanged in what is used: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/images.py", globals())
