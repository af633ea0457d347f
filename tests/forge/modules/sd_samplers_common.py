"""Mirrors Forge's modules/sd_samplers_common.py (``SamplerData``, ``Sampler``, ``setup_img2img_steps``, ``TorchHijack``): A1111's in what is used (Forge's ``apply_refiner(denoiser, x)`` is False without a refiner, as the stand-in's): the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/sd_samplers_common.py", globals())
