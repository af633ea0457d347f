"""Mirrors backend/modules/k_model.py ``KModel.apply_model(x, t, c_concat, c_crossattn, control,
transformer_options, **kwargs)``: t is a k-diffusion sigma; the UNet gets
``predictor.calculate_input(sigma, x)`` and the predictor's timestep, and the result is the
denoised x0."""

import torch


class KModel(torch.nn.Module):
    def __init__(self, model, k_predictor):
        super().__init__()
        self.storage_dtype = self.computation_dtype = torch.float32
        self.diffusion_model = model
        self.predictor = k_predictor

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc] + [c_concat], dim=1)
        dtype = self.computation_dtype
        xc, context = xc.to(dtype), c_crossattn.to(dtype)
        t = self.predictor.timestep(t).float()
        extra = {k: (v.to(dtype) if hasattr(v, "dtype") and v.dtype not in (torch.int, torch.long) else v) for k, v in kwargs.items()}
        out = self.diffusion_model(xc, t, context=context, control=control, transformer_options=transformer_options, **extra).float()
        return self.predictor.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape):
        area = input_shape[0] * input_shape[2] * input_shape[3]
        return 1.28 * area * 4 * 16384
