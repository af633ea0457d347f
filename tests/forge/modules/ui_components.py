"""Mirrors Forge's modules/ui_components.py (``FormRow``, ``InputAccordion``): the same classes, ported to gradio 4 (this stand-in runs on the test venv's gradio 3.41): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/ui_components.py", globals())
