"""Mirrors modules/sd_hijack_optimizations.py: each optimisation replaces
``ldm.modules.attention.CrossAttention.forward`` at class level (``apply``) with its own kernel,
and none but the plain one ever holds the attention probabilities. Same maths as upstream's
functions, written for CPU torch (xformers' kernel is stood in by torch's fused attention).
As upstream, every kernel first passes the context through the loaded hypernetworks
(``hypernetwork.apply_hypernetworks``): k and v read their own transformed contexts."""


import torch
from einops import rearrange
from ldm.modules.attention import CrossAttention
from torch import einsum
from torch.nn.attention import SDPBackend, sdpa_kernel

from modules import shared
from modules.hypernetworks import hypernetwork

ORIGINAL = CrossAttention.forward


def _contexts(self, x, context):
    """(k context, v context): the hypernetworks' transform, which every upstream kernel applies."""
    return hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, x if context is None else context)


def _qkv(self, x, context):
    context_k, context_v = _contexts(self, x, context)
    q, k, v = self.to_q(x), self.to_k(context_k), self.to_v(context_v)
    return (rearrange(t, "b n (h d) -> (b h) n d", h=self.heads) for t in (q, k, v))


def _out(self, r, b):
    return self.to_out(rearrange(r, "(b h) n d -> b n (h d)", b=b))


def split_forward(self, x, context=None, mask=None, slice_size=512, **kwargs):
    """Doggettx / InvokeAI / V1: the same product, sliced over queries to bound memory."""
    q, k, v = _qkv(self, x, context)
    r = torch.zeros(q.shape[0], q.shape[1], v.shape[2], device=q.device, dtype=q.dtype)
    for i in range(0, q.shape[1], slice_size):
        s = einsum("b i d, b j d -> b i j", q[:, i:i + slice_size], k * self.scale)
        r[:, i:i + slice_size] = einsum("b i j, b j d -> b i d", s.softmax(dim=-1), v)
    return _out(self, r, x.shape[0])


def sub_quad_forward(self, x, context=None, mask=None, q_chunk=256, kv_chunk=32, **kwargs):
    """sub-quadratic: chunks of queries and keys, combined with a running log-sum-exp."""
    q, k, v = _qkv(self, x, context)
    outs = []
    for i in range(0, q.shape[1], q_chunk):
        qi = q[:, i:i + q_chunk] * self.scale
        acc, norm, peak = None, None, None
        for j in range(0, k.shape[1], kv_chunk):
            s = einsum("b i d, b j d -> b i j", qi, k[:, j:j + kv_chunk])
            m = s.amax(dim=-1, keepdim=True)
            new_peak = m if peak is None else torch.maximum(peak, m)
            w = (s - new_peak).exp()
            part = einsum("b i j, b j d -> b i d", w, v[:, j:j + kv_chunk])
            if acc is None:
                acc, norm = part, w.sum(-1, keepdim=True)
            else:
                scale = (peak - new_peak).exp()
                acc, norm = acc * scale + part, norm * scale + w.sum(-1, keepdim=True)
            peak = new_peak
        outs.append(acc / norm)
    return _out(self, torch.cat(outs, dim=1), x.shape[0])


def _sdpa(self, x, context, backends):
    context_k, context_v = _contexts(self, x, context)
    b, h = x.shape[0], self.heads
    q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2)
               for t in (self.to_q(x), self.to_k(context_k), self.to_v(context_v)))
    with sdpa_kernel(backends):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, -1, h * q.shape[-1]))


def sdp_forward(self, x, context=None, mask=None, **kwargs):
    return _sdpa(self, x, context, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def sdp_no_mem_forward(self, x, context=None, mask=None, **kwargs):
    return _sdpa(self, x, context, [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


OPTIMIZERS = {  # name -> CrossAttention.forward it installs
    "xformers": sdp_forward, "Doggettx": split_forward, "sdp-no-mem": sdp_no_mem_forward, "sdp": sdp_forward,
    "sub-quadratic": sub_quad_forward, "V1": split_forward, "InvokeAI": split_forward,
    "None": hypernetwork.attention_CrossAttention_forward,
}


def apply(name: str) -> None:
    """``SdOptimization.apply()``: a class-level replacement, as the WebUI makes at model load."""
    CrossAttention.forward = OPTIMIZERS[name]


def undo() -> None:
    CrossAttention.forward = ORIGINAL
