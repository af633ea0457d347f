"""T-SAM's guidance pass through sd-webui-controlnet (Mikubill/sd-webui-controlnet, followed at
v1.1.455): its ``scripts/hook.py`` (``UnetHook.hook``: the UNet's ``forward`` becomes
``forward_webui`` -> ``forward``; ``guidance_schedule_handler``), the attention hacks of
``scripts/ipadapter/plugable_ipadapter.py`` (``PlugableIPAdapter.patch_forward``) and
``scripts/controlnet_lllite.py`` (``PlugableControlLLLite.get_hacked_forward``).

The pass replays ControlNet's own forward rather than the UNet's original forward plus
residuals T-SAM would compute: every unit type, control mode, weight and resize rule, soft
injection, T2I-Adapter injection, reference-only banks, inpaint hijack and IP-Adapter / LLLite
hack is then exactly what sampling applies, with none of ControlNet's code copied. Inside the
pass (``guidance_pass``), and only there, T-SAM changes three things:

1. Gradients. ``forward`` runs the UNet's encoder and middle block under ``with th.no_grad()``
   (``th``: hook.py's ``TorchHijackForUnet``), and the IP-Adapter and LLLite hacks are
   ``@torch.no_grad()`` functions, which would leave the latent/4 maps of the encoder constant
   and the rest partial. ``th`` becomes a proxy whose ``no_grad`` does nothing, the hacks run
   their undecorated bodies (``__wrapped__``), and the units' own models are frozen, so the
   gradient is the exact one of the composed function, through the UNet and the ControlNets.
2. The step. ControlNet sets each unit's start/end window in an ``on_cfg_denoiser`` callback,
   which the CFG denoiser fires after T-SAM's pass; the pass first calls that handler with the
   values the callback is about to get (``state.sampling_step`` / ``sampling_steps``), so it
   applies the units sampling applies at this step.
3. State. The forward caches tensors sized by its batch (``used_hint_cond_latent``,
   ``used_hint_inpaint_hijack``; IP-Adapter's per-layer image k/v in its ``cache``), keeps the
   call's cond/uncond indices and cond mark, fills reference banks, and clears processing's cond
   caches. The pass starts with the batch caches empty, so ControlNet builds them for the pass's
   rows, and puts every one of these back as it was, so the sampler's own calls find ControlNet
   exactly as without T-SAM (an IP-Adapter cache filled by T-SAM's rows first would be read by
   the sampler's batch). The pass also leaves the global random generator as it found it
   (``sampling_pass``): reference-only noises its reference from it.

The conds carry ControlNet's cond marks (``mark_prompt_context``: one extra token row of +-1024)
because ControlNet's ``forward`` expects and removes them: the pass passes the conds as sampling
has them, and the maps are read inside the UNet, after the mark is gone.
"""

import sys
import types
from contextlib import ExitStack, contextmanager, nullcontext

import torch

from modules import processing, shared

from ...core.guidance import frozen
from ..attributes import restored

UNIT_STATE = ("guidance_stopped", "used_hint_cond", "used_hint_cond_latent", "used_hint_inpaint_hijack")
BATCH_CACHES = ("used_hint_cond_latent", "used_hint_inpaint_hijack")  # sized by the forward's batch
HOOK_STATE = ("current_uc_indices", "current_c_indices", "is_in_high_res_fix", "current_style_fidelity",
              "attention_auto_machine", "attention_auto_machine_weight", "gn_auto_machine", "gn_auto_machine_weight")
UNET_STATE = ("cond_mark", "is_in_high_res_fix", "current_sampling_percent", "current_h_shape")
BANKS = ("bank", "style_cfgs", "mean_bank", "var_bank")
COND_CACHES = ("cached_c", "cached_uc")


def network(p, unet):
    """ControlNet's ``UnetHook`` hooked on ``unet`` for this generation (its Script keeps it as
    ``latest_network``), or None."""
    for script in getattr(getattr(p, "scripts", None), "alwayson_scripts", ()):
        net = getattr(script, "latest_network", None)
        if net is not None and getattr(net, "model", None) is unet and getattr(net, "control_params", None) is not None:
            return net
    return None


class GradTorch:
    """hook.py's ``th`` with a ``no_grad`` that does nothing; everything else is ``th``'s own
    (its ``cat`` resizes mismatched tensors)."""

    def __init__(self, th):
        self._th = th

    def __getattr__(self, name):
        return nullcontext if name == "no_grad" else getattr(self._th, name)


@contextmanager
def undecorated_hacks(unet):
    """IP-Adapter's attention hacks (``ipadapter_hacks`` lists on attn2 layers) and LLLite's
    projection forwards (modules with an ``lllite_list``) run their bodies without ``no_grad``."""
    lists, forwards = [], []
    for module in unet.modules():
        hacks = getattr(module, "ipadapter_hacks", None)
        if hacks:
            lists.append((module, hacks))
            module.ipadapter_hacks = [getattr(f, "__wrapped__", f) for f in hacks]
        own = vars(module).get("forward")
        if getattr(module, "lllite_list", None) and hasattr(own, "__wrapped__"):
            forwards.append((module, own))
            module.forward = own.__wrapped__
    try:
        yield
    finally:
        for module, hacks in lists:
            module.ipadapter_hacks = hacks
        for module, own in forwards:
            module.forward = own


@contextmanager
def guidance_pass(p, unet):
    """Scope of T-SAM's guidance passes of one step through ControlNet's hooked ``unet`` (nothing
    when ControlNet is not hooked on it this generation). See the module's docstring."""
    net = network(p, unet)
    if net is None:
        yield
        return
    units = list(net.control_params)
    models = list({id(u.control_model): u.control_model for u in units
                   if isinstance(getattr(u, "control_model", None), torch.nn.Module)}.values())
    cached = [m for m in models if isinstance(getattr(m, "cache", None), dict)]
    banked = list(getattr(net, "attn_module_list", [])) + list(getattr(net, "gn_module_list", []))
    hook_module = sys.modules.get(type(net).__module__)
    with ExitStack() as stack:
        stack.enter_context(restored(
            [(u, name) for u in units for name in UNIT_STATE] + [(net, name) for name in HOOK_STATE]
            + [(unet, name) for name in UNET_STATE] + [(m, name) for m in banked for name in BANKS]
            + [(processing.StableDiffusionProcessing, name) for name in COND_CACHES] + [(m, "cache") for m in cached]
            + ([(hook_module, "th")] if hasattr(hook_module, "th") else [])))
        for unit in units:
            for name in BATCH_CACHES:
                setattr(unit, name, None)
        for model in cached:
            model.cache = {}
        net.guidance_schedule_handler(types.SimpleNamespace(sampling_step=shared.state.sampling_step,
                                                            total_sampling_steps=shared.state.sampling_steps))
        if hasattr(hook_module, "th"):
            hook_module.th = GradTorch(hook_module.th)
        stack.enter_context(undecorated_hacks(unet))
        for model in models:
            stack.enter_context(frozen(model))
        yield
