"""Mirrors modules/lowvram.py ``is_enabled``."""


def is_enabled(sd_model):
    return getattr(sd_model, "lowvram", False)
