"""Mirrors backend/misc/image_resize.py ``adaptive_resize`` (:92): a center crop to the new
aspect ratio, then ``interpolate`` (the "bislerp" / "lanczos" modes are not mirrored)."""

import torch


def adaptive_resize(samples, width, height, upscale_method, crop):
    s = samples
    if crop == "center":
        old_width, old_height = samples.shape[3], samples.shape[2]
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        s = samples[:, :, y:old_height - y, x:old_width - x]
    return torch.nn.functional.interpolate(s, size=(height, width), mode=upscale_method)
