"""Mirrors Forge's modules/script_callbacks.py: identical to A1111 1.10.1 (only on_cfg_denoised is never called by Forge): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/script_callbacks.py", globals())
