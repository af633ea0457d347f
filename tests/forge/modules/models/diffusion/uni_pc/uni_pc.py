"""Mirrors Forge's modules/models/diffusion/uni_pc/uni_pc.py, byte-identical to A1111 1.10.1's: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/models/diffusion/uni_pc/uni_pc.py", globals())
