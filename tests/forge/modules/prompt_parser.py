"""Mirrors Forge's modules/prompt_parser.py: A1111's, plus ``distilled_cfg_scale`` on SdConditioning and ``DictWithShape.to`` (unused by SD 1.x): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/prompt_parser.py", globals())
