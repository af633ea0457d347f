"""Mirrors backend/patcher/controlnet.py (Forge dfdcbab6): ``apply_controlnet_advanced`` (a copy
of the ControlNet with its hint, strength and window, linked into a clone of the UNet patcher),
``compute_controlnet_weighting``, ``broadcast_image_to``, ``ControlBase`` (``pre_run`` turns the
window's percents into sigmas; ``control_merge`` scales the residuals by the strength in place
and adds the previous ControlNet's), ``ControlNet.get_control`` and ``T2IAdapter.get_control``.

What ``get_control`` keeps between calls is what a guidance pass must not disturb: ``cond_hint``,
resized to the latent on a size change and, for a batch of hints, broadcast to the call's batch
(``broadcast_image_to`` takes the first ``batch // batched_number`` hints), and the T2I-Adapter's
``control_input``, computed once from the hint and kept."""

import math

import torch

from backend import memory_management
from backend.misc import image_resize
from backend.patcher.base import ModelPatcher


def apply_controlnet_advanced(unet, controlnet, image_bchw, strength, start_percent, end_percent,
                              positive_advanced_weighting=None, negative_advanced_weighting=None,
                              advanced_frame_weighting=None, advanced_sigma_weighting=None, advanced_mask_weighting=None):
    cnet = controlnet.copy().set_cond_hint(image_bchw, strength, (start_percent, end_percent))
    cnet.positive_advanced_weighting = positive_advanced_weighting
    cnet.negative_advanced_weighting = negative_advanced_weighting
    cnet.advanced_frame_weighting = advanced_frame_weighting
    cnet.advanced_sigma_weighting = advanced_sigma_weighting
    cnet.advanced_mask_weighting = advanced_mask_weighting
    m = unet.clone()
    m.add_patched_controlnet(cnet)
    return m


def get_at(array, index, default=None):
    return array[index] if 0 <= index < len(array) else default


def compute_controlnet_weighting(control, cnet):
    positive = getattr(cnet, "positive_advanced_weighting", None)
    negative = getattr(cnet, "negative_advanced_weighting", None)
    frame = getattr(cnet, "advanced_frame_weighting", None)
    sigma_w = getattr(cnet, "advanced_sigma_weighting", None)
    mask_w = getattr(cnet, "advanced_mask_weighting", None)
    to = cnet.transformer_options
    if positive is None and negative is None and frame is None and sigma_w is None and mask_w is None:
        return control
    cond_or_uncond, sigmas, cond_mark = to["cond_or_uncond"], to["sigmas"], to["cond_mark"]
    if frame is not None:
        frame = torch.Tensor(frame * len(cond_or_uncond)).to(sigmas)
        assert frame.shape[0] == cond_mark.shape[0], "Frame weighting list length is different from batch size!"
    if sigma_w is not None:
        sigma_w = torch.cat([sigma_w(sigmas)] * len(cond_or_uncond))
    for k, v in control.items():
        for i in range(len(v)):
            signal = control[k][i]
            if not isinstance(signal, torch.Tensor):
                continue
            B, C, H, W = signal.shape
            positive_weight = get_at(positive.get(k, []), i, 1.0) if positive is not None else 1.0
            negative_weight = get_at(negative.get(k, []), i, 1.0) if negative is not None else 1.0
            final_weight = positive_weight * (1.0 - cond_mark) + negative_weight * cond_mark
            final_weight = final_weight * (sigma_w if sigma_w is not None else 1.0) * (frame if frame is not None else 1.0)
            if isinstance(mask_w, torch.Tensor):
                if mask_w.shape[0] != 1:
                    k_ = int(signal.shape[0] // mask_w.shape[0])
                    if signal.shape[0] == k_ * mask_w.shape[0]:
                        mask_w = mask_w.repeat(k_, 1, 1, 1)
                signal = signal * torch.nn.functional.interpolate(mask_w.to(signal), size=(H, W), mode="bilinear")
            control[k][i] = signal * final_weight[:, None, None, None]
    return control


def broadcast_image_to(tensor, target_batch_size, batched_number):
    current_batch_size = tensor.shape[0]
    if current_batch_size == 1:
        return tensor
    per_batch = target_batch_size // batched_number
    tensor = tensor[:per_batch]
    if per_batch > tensor.shape[0]:
        tensor = torch.cat([tensor] * (per_batch // tensor.shape[0]) + [tensor[:(per_batch % tensor.shape[0])]], dim=0)
    if tensor.shape[0] == target_batch_size:
        return tensor
    return torch.cat([tensor] * batched_number, dim=0)


class ControlBase:
    def __init__(self, device=None):
        self.cond_hint_original = None
        self.cond_hint = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.global_average_pooling = False
        self.timestep_range = None
        self.transformer_options = {}
        self.device = device or torch.device("cpu")
        self.previous_controlnet = None

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0)):
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        return self

    def pre_run(self, model, percent_to_timestep_function):
        self.timestep_range = (percent_to_timestep_function(self.timestep_percent_range[0]), percent_to_timestep_function(self.timestep_percent_range[1]))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet):
        self.previous_controlnet = controlnet
        return self

    def cleanup(self):
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.timestep_range = None

    def get_models(self):
        return self.previous_controlnet.get_models() if self.previous_controlnet is not None else []

    def copy_to(self, c):
        c.cond_hint_original = self.cond_hint_original
        c.strength = self.strength
        c.timestep_percent_range = self.timestep_percent_range
        c.global_average_pooling = self.global_average_pooling

    def control_merge(self, control_input, control_output, control_prev, output_dtype):
        out = {"input": [], "middle": [], "output": []}
        if control_input is not None:
            for i in range(len(control_input)):
                x = control_input[i]
                if x is not None:
                    x *= self.strength
                    if x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out["input"].insert(0, x)
        if control_output is not None:
            for i in range(len(control_output)):
                key = "middle" if i == len(control_output) - 1 else "output"
                x = control_output[i]
                if x is not None:
                    if self.global_average_pooling:
                        x = torch.mean(x, dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    x *= self.strength
                    if x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out[key].append(x)
        out = compute_controlnet_weighting(out, self)
        if control_prev is not None:
            for x in ["input", "middle", "output"]:
                o = out[x]
                for i in range(len(control_prev[x])):
                    prev_val = control_prev[x][i]
                    if i >= len(o):
                        o.append(prev_val)
                    elif prev_val is not None:
                        if o[i] is None:
                            o[i] = prev_val
                        elif o[i].shape[0] < prev_val.shape[0]:
                            o[i] = prev_val + o[i]
                        else:
                            o[i] += prev_val
        return out


class ControlNet(ControlBase):
    def __init__(self, control_model, global_average_pooling=False, device=None, load_device=None, manual_cast_dtype=None):
        super().__init__(device)
        self.control_model = control_model
        self.load_device = load_device
        self.control_model_wrapped = ModelPatcher(self.control_model, load_device=load_device,
                                                  offload_device=memory_management.unet_offload_device())
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current = None
        self.manual_cast_dtype = manual_cast_dtype

    def get_control(self, x_noisy, t, cond, batched_number):
        to = self.transformer_options
        for conditioning_modifier in to.get("controlnet_conditioning_modifiers", []):
            x_noisy, t, cond, batched_number = conditioning_modifier(self, x_noisy, t, cond, batched_number)
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self.timestep_range is not None:
            if t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]:
                return control_prev
        dtype = self.manual_cast_dtype if self.manual_cast_dtype is not None else self.control_model.dtype
        output_dtype = x_noisy.dtype
        if self.cond_hint is None or x_noisy.shape[2] * 8 != self.cond_hint.shape[2] or x_noisy.shape[3] * 8 != self.cond_hint.shape[3]:
            self.cond_hint = None
            self.cond_hint = image_resize.adaptive_resize(self.cond_hint_original, x_noisy.shape[3] * 8, x_noisy.shape[2] * 8, "nearest-exact", "center").to(dtype)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        context = cond["c_crossattn"]
        y = cond.get("y", None)
        if y is not None:
            y = y.to(dtype)
        timestep = self.model_sampling_current.timestep(t)
        x_noisy = self.model_sampling_current.calculate_input(t, x_noisy)
        wrapper = to.get("controlnet_model_function_wrapper", None)
        if wrapper is not None:
            control = wrapper(x=x_noisy.to(dtype), hint=self.cond_hint, timesteps=timestep.float(), context=context.to(dtype), y=y,
                              model=self, inner_model=self.control_model)
        else:
            control = self.control_model(x=x_noisy.to(dtype), hint=self.cond_hint.to(self.device), timesteps=timestep.float(), context=context.to(dtype), y=y)
        return self.control_merge(None, control, control_prev, output_dtype)

    def copy(self):
        c = ControlNet(self.control_model, global_average_pooling=self.global_average_pooling, load_device=self.load_device, manual_cast_dtype=self.manual_cast_dtype)
        self.copy_to(c)
        return c

    def get_models(self):
        return super().get_models() + [self.control_model_wrapped]

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.predictor

    def cleanup(self):
        self.model_sampling_current = None
        super().cleanup()


class T2IAdapter(ControlBase):
    def __init__(self, t2i_model, channels_in, device=None):
        super().__init__(device)
        self.t2i_model = t2i_model
        self.channels_in = channels_in
        self.control_input = None

    def scale_image_to(self, width, height):
        unshuffle_amount = self.t2i_model.unshuffle_amount
        return math.ceil(width / unshuffle_amount) * unshuffle_amount, math.ceil(height / unshuffle_amount) * unshuffle_amount

    def get_control(self, x_noisy, t, cond, batched_number):
        to = self.transformer_options
        for conditioning_modifier in to.get("controlnet_conditioning_modifiers", []):
            x_noisy, t, cond, batched_number = conditioning_modifier(self, x_noisy, t, cond, batched_number)
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self.timestep_range is not None:
            if t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]:
                return control_prev
        if self.cond_hint is None or x_noisy.shape[2] * 8 != self.cond_hint.shape[2] or x_noisy.shape[3] * 8 != self.cond_hint.shape[3]:
            self.control_input = None
            self.cond_hint = None
            width, height = self.scale_image_to(x_noisy.shape[3] * 8, x_noisy.shape[2] * 8)
            self.cond_hint = image_resize.adaptive_resize(self.cond_hint_original, width, height, "nearest-exact", "center").float()
            if self.channels_in == 1 and self.cond_hint.shape[1] > 1:
                self.cond_hint = torch.mean(self.cond_hint, 1, keepdim=True)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        if self.control_input is None:
            self.control_input = self.t2i_model(self.cond_hint.to(x_noisy))
        control_input = [None if a is None else a.clone() for a in self.control_input]
        mid = None
        if self.t2i_model.xl:
            mid, control_input = control_input[-1:], control_input[:-1]
        return self.control_merge(control_input, mid, control_prev, x_noisy.dtype)

    def copy(self):
        c = T2IAdapter(self.t2i_model, self.channels_in)
        self.copy_to(c)
        return c
