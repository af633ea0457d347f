"""T-SAM guidance: steer Stable Diffusion's latent so that the similarity of the UNet's
cross-attention maps matches the text encoder's own self-attention (Kim et al., CVPR 2025).

The math and the guidance step in this package are host-free; ``tsam_ext.host`` is the only
part that knows the AUTOMATIC1111 WebUI.
"""

__version__ = "1.0.0"
