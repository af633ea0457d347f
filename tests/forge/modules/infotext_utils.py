"""Mirrors Forge's modules/infotext_utils.py (``quote``, ``parse_generation_parameters``): unchanged in what is used: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/infotext_utils.py", globals())
