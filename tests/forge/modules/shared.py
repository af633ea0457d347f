"""Mirrors Forge's modules/shared.py (+ shared_state, options): A1111's globals, read by the same
names (Forge makes ``sd_model`` a property over ``sd_models.model_data``; here the stand-in's
``sd_models.forge_model_reload`` sets it). The A1111 stand-in's file."""

from reuse import a1111

a1111("modules/shared.py", globals())

