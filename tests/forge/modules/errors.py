"""Mirrors Forge's modules/errors.py (``report``): unchanged from A1111: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/errors.py", globals())
