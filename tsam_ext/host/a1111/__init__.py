"""The AUTOMATIC1111 WebUI 1.10 backend: text targets from its text encoders and the steering of
its samplers."""
