"""Mirrors modules/hypernetworks/hypernetwork.py: ``HypernetworkModule``, ``Hypernetwork`` (the
inference part: layers per context width, multiplier, eval), ``apply_single_hypernetwork``,
``apply_hypernetworks`` and ``attention_CrossAttention_forward`` (the attention forward of the
"None" optimisation and of ``undo_optimizations``). Loading from ``.pt`` and training are left
out; a test builds a ``Hypernetwork`` directly and puts it in ``shared.loaded_hypernetworks`` as
``load_hypernetworks`` does."""

import torch
from einops import rearrange
from torch import einsum

from modules import devices, shared

ACTIVATIONS = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU,
               "elu": torch.nn.ELU, "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
INITS = {"XavierUniform": torch.nn.init.xavier_uniform_, "XavierNormal": torch.nn.init.xavier_normal_,
         "KaimingUniform": torch.nn.init.kaiming_uniform_, "KaimingNormal": torch.nn.init.kaiming_normal_}


class HypernetworkModule(torch.nn.Module):
    """A residual MLP on the context: x + mlp(x) * multiplier (the multiplier only in eval mode).
    ``layer_structure`` gives each layer's width as a multiple of ``dim``, from 1 back to 1."""

    def __init__(self, dim, state_dict=None, layer_structure=None, activation_func=None, weight_init="Normal",
                 add_layer_norm=False, activate_output=False, dropout_structure=None):
        super().__init__()
        self.multiplier = 1.0
        assert layer_structure is not None and layer_structure[0] == 1 and layer_structure[-1] == 1
        layers = []
        for i in range(len(layer_structure) - 1):
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            last = i >= len(layer_structure) - 2
            if activation_func not in (None, "linear") and (not last or activate_output):
                layers.append(ACTIVATIONS[activation_func]())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)
        if state_dict is not None:
            self.load_state_dict(state_dict)
        else:
            for layer in self.linear:
                if isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                    if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                        torch.nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                        torch.nn.init.normal_(layer.bias, mean=0.0, std=0)
                    else:
                        INITS[weight_init](layer.weight)
                        torch.nn.init.zeros_(layer.bias)
        self.to(devices.device)

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


class Hypernetwork:
    """One hypernetwork: for each context width in ``enable_sizes`` a (k, v) pair of modules."""

    def __init__(self, name=None, enable_sizes=None, layer_structure=None, activation_func=None, weight_init=None,
                 add_layer_norm=False, use_dropout=False, activate_output=False, **kwargs):
        self.name = name
        self.layers = {}
        self.layer_structure = layer_structure
        for size in enable_sizes or []:
            self.layers[size] = tuple(HypernetworkModule(size, None, layer_structure, activation_func, weight_init,
                                                         add_layer_norm, activate_output) for _ in range(2))
        self.eval()

    def eval(self):
        for pair in self.layers.values():
            for module in pair:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def set_multiplier(self, multiplier):
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self


def apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None):
    """(k, v) contexts through the hypernetwork's modules for this context width (unchanged if none)."""
    pair = (hypernetwork.layers if hypernetwork is not None else {}).get(context_k.shape[2], None)
    if pair is None:
        return context_k, context_v
    if layer is not None:
        layer.hyper_k, layer.hyper_v = pair
    context_k = devices.cond_cast_unet(pair[0](devices.cond_cast_float(context_k)))
    context_v = devices.cond_cast_unet(pair[1](devices.cond_cast_float(context_v)))
    return context_k, context_v


def apply_hypernetworks(hypernetworks, context, layer=None):
    """Every loaded hypernetwork in turn, k and v each along its own chain."""
    context_k = context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v


def attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs):
    """ldm CrossAttention with the hypernetworks applied: einsum, softmax, einsum (no slicing)."""
    h = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    context_k, context_v = apply_hypernetworks(shared.loaded_hypernetworks, context, self)
    k, v = self.to_k(context_k), self.to_v(context_v)
    q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
    sim = einsum("b i d, b j d -> b i j", q, k) * self.scale
    out = einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
    return self.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=h))
