"""Mirrors modules/sd_unet.py: ``current_unet`` is set when an alternative UNet (TensorRT) is active."""

current_unet = None
