"""The standalone runtime: Stable Diffusion on its real architectures outside any WebUI (models
with random weights or a checkpoint's, k-diffusion's samplers), used by ``python -m tsam_ext``,
the benchmark, the evaluation and the tests."""
