"""Stand-in of sgm (Stability-AI/generative-models 45c443b3, the commit A1111 1.10.1 pins), which
is on no package registry: the parts of SDXL's model A1111 and T-SAM touch, each file naming the
sgm file it mirrors. The UNet is not here: the runtime's ``sdxl_unet`` (ldm's blocks in SDXL's
layout, key for key the same as sgm's ``UNetModel``) stands in for sgm's."""
