"""The one dtype rule of the core: compute in at least float32."""

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 inputs are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def upcast(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return t.to(dtype or compute_dtype(t))
