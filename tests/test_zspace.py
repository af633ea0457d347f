"""The k-diffusion conversion: the step is taken on the UNet's input z = x * c_in and mapped back,
checked against k-diffusion's own CompVisDenoiser."""

import pytest
import torch
from k_diffusion import external

from tsam_ext.core.zspace import unet_input_scale, unet_timestep


class Spy(torch.nn.Module):
    """An SD model for CompVisDenoiser that records what the UNet would be given."""

    def __init__(self):
        super().__init__()
        self.register_buffer("alphas_cumprod", torch.linspace(0.9991, 0.0047, 1000))
        self.seen = []

    def apply_model(self, x, t, cond=None):
        self.seen.append((x.clone(), t.clone()))
        return torch.zeros_like(x)


@pytest.mark.parametrize("sigma", [14.6, 3.0, 0.3])
def test_a_step_on_z_moves_the_unets_input_by_exactly_that(sigma):
    model = Spy()
    denoiser = external.CompVisDenoiser(model)
    s = torch.tensor([sigma, sigma])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sigma
    dz = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.05
    c_in = unet_input_scale(denoiser, s)
    assert torch.allclose(c_in.flatten(), 1 / torch.sqrt(s ** 2 + 1))
    denoiser(x, s)
    denoiser(x + dz / c_in, s)  # the adapter's update: x.add_(dz / c_in)
    denoiser(x + dz, s)         # the naive one, on x
    (z0, t0), (z1, t1), (z2, _) = model.seen
    torch.testing.assert_close(z1 - z0, dz, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(t0, unet_timestep(denoiser, s))
    naive = ((z2 - z0) / dz).mean().item()
    assert naive == pytest.approx(1 / (sigma ** 2 + 1) ** 0.5, rel=1e-3)  # ~1/14.6 of the intended move at sigma_max


def test_timestep_wrappers_pass_x_straight_through():
    class Timesteps(torch.nn.Module):  # the shape of A1111's CompVisTimestepsDenoiser: no get_scalings
        pass
    t = torch.tensor([981.0])
    assert torch.equal(unet_input_scale(Timesteps(), t), torch.ones(1, 1, 1, 1))
    assert unet_timestep(Timesteps(), t) is t
