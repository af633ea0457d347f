"""The latent the UNet sees: z = x * c_in for k-diffusion samplers, z = x for timestep samplers.

k-diffusion keeps x = x0 + sigma * eps (unnormalised); its CompVis wrappers feed the UNet
x * c_in with c_in = 1 / sqrt(sigma^2 + 1). T-SAM's step sizes are tuned on z, so the step is
taken on z and mapped back: dx = dz / c_in. A step taken on x itself would be (1 + sigma^2)
times too small (about 200x at sigma = 14.6).
"""

import torch


def sd_alphas_cumprod() -> torch.Tensor:
    """alpha-bar [1000] (float64) of the DDPM schedule SD 1.x, 2.x and SDXL share: 'scaled linear'
    betas from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def unet_input_scale(denoiser, sigma: torch.Tensor) -> torch.Tensor:
    """c_in [B, 1, 1, 1] of a k-diffusion denoiser wrapper (the last of its ``get_scalings``); 1
    for wrappers that pass x straight to the UNet (DDIM/PLMS/UniPC's timestep denoisers)."""
    scalings = getattr(denoiser, "get_scalings", None)
    if scalings is None:
        return torch.ones(sigma.shape[0], 1, 1, 1, dtype=torch.float32, device=sigma.device)
    return scalings(sigma)[-1].float().reshape(-1, 1, 1, 1)


def unet_timestep(denoiser, sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's timestep: k-diffusion maps sigma to a (fractional) DDPM t; timestep samplers pass t."""
    to_t = getattr(denoiser, "sigma_to_t", None)
    return sigma if to_t is None else to_t(sigma)
