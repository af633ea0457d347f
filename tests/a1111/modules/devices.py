"""Mirrors modules/devices.py: device/dtype globals and the autocast helpers (CPU, fp32: the
WebUI's ``--no-half`` CPU mode, where ``autocast`` is a null context)."""

import contextlib

import torch

device = cpu = torch.device("cpu")
dtype = dtype_unet = dtype_inference = dtype_vae = torch.float32
unet_needs_upcast = False
fp8 = False
gc_calls = 0


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


def cond_cast_unet(t):
    return t.to(dtype_unet)


def cond_cast_float(t):
    return t.float() if unet_needs_upcast else t


def torch_gc():
    global gc_calls
    gc_calls += 1


def torch_npu_set_device():
    pass


class NansException(Exception):
    pass


def test_for_nans(x, where):
    if torch.isnan(x[(0,) * x.dim()]):
        raise NansException(f"A tensor with NaNs was produced in {where}.")
