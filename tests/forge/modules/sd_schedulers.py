"""Mirrors Forge's modules/sd_schedulers.py as far as A1111 1.10.1's schedule types go (Forge
appends Turbo and the Align Your Steps GITS / 11 / 32 variants after them): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_schedulers.py", globals())
