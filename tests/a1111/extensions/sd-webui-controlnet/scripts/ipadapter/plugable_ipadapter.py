"""Mirrors sd-webui-controlnet ``scripts/ipadapter/plugable_ipadapter.py``: ``attn_forward_hacked``
(the attn2 layer's own text attention, then each hack's output added), ``hack_blk``,
``clear_all_ip_adapter`` and ``PlugableIPAdapter`` (``hook`` decorated with ``@torch.no_grad()``;
``patch_forward``'s attention over the image tokens, ``@torch.no_grad()`` like the real one, with
its per-key k/v cache and the start/end window read from the UNet's ``current_sampling_percent``,
the image embedding picked per row by the UNet's ``cond_mark``). The projection model is a small
random one here (the real ``IPAdapterModel`` holds the trained ``to_k_ip`` / ``to_v_ip``)."""

import torch

all_hacks = {}
current_model = None


def attn_forward_hacked(self, x, context=None, **kwargs):
    batch_size, sequence_length, inner_dim = x.shape
    h = self.heads
    head_dim = inner_dim // h
    if context is None:
        context = x
    q = self.to_q(x)
    k = self.to_k(context)
    v = self.to_v(context)
    del context
    q, k, v = map(lambda t: t.view(batch_size, -1, h, head_dim).transpose(1, 2), (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(batch_size, -1, h * head_dim)
    del k, v
    for f in self.ipadapter_hacks:
        out = out + f(self, x, q)
    del q, x
    return self.to_out(out)


def hack_blk(block, function, type):
    if not hasattr(block, "ipadapter_hacks"):
        block.ipadapter_hacks = []
    if len(block.ipadapter_hacks) == 0:
        all_hacks[block] = block.forward
        block.forward = attn_forward_hacked.__get__(block, type)
    block.ipadapter_hacks.append(function)


def clear_all_ip_adapter():
    global all_hacks, current_model
    for k, v in all_hacks.items():
        k.forward = v
        k.ipadapter_hacks = []
    all_hacks = {}
    current_model = None


class ImageEmbed:
    """cond / uncond image tokens; ``eval(cond_mark)`` picks per row, as the real ``ImageEmbed``."""

    def __init__(self, cond_emb, uncond_emb):
        self.cond_emb, self.uncond_emb = cond_emb, uncond_emb

    def eval(self, cond_mark):
        mark = cond_mark[:, :, :, 0].to(self.cond_emb)
        return self.cond_emb * mark + self.uncond_emb * (1 - mark)


class PlugableIPAdapter(torch.nn.Module):
    def __init__(self, context_dim, inner_dims, tokens=4, seed=11):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.to_kvs = torch.nn.ModuleDict()
        for i, dim in enumerate(inner_dims):
            for kind in ("k", "v"):
                layer = torch.nn.Linear(context_dim, dim, bias=False)
                torch.nn.init.normal_(layer.weight, std=0.5 / context_dim ** 0.5, generator=g)
                self.to_kvs[f"{i * 2 + 1}_to_{kind}_ip"] = layer
        self.image_emb = ImageEmbed(torch.randn(1, tokens, context_dim, generator=g), torch.zeros(1, tokens, context_dim))
        self.weight, self.p_start, self.p_end, self.cache = 1.0, 0.0, 1.0, {}

    def reset(self):
        self.cache = {}

    @torch.no_grad()
    def hook(self, model, attn2_layers, weight=1.0, start=0.0, end=1.0):
        global current_model
        current_model = model
        self.p_start, self.p_end, self.weight, self.cache = start, end, weight, {}
        for i, layer in enumerate(attn2_layers):
            hack_blk(layer, self.patch_forward(i), type(layer))

    def call_ip(self, key, feat, device):
        if key in self.cache:
            return self.cache[key]
        ip = self.to_kvs[key](feat).to(device)
        self.cache[key] = ip
        return ip

    @torch.no_grad()
    def patch_forward(self, number):
        @torch.no_grad()
        def forward(attn_blk, x, q):
            batch_size, sequence_length, inner_dim = x.shape
            h = attn_blk.heads
            head_dim = inner_dim // h
            current_sampling_percent = getattr(current_model, "current_sampling_percent", 0.5)
            if current_sampling_percent < self.p_start or current_sampling_percent > self.p_end or self.weight == 0.0:
                return 0.0
            emb = self.image_emb.eval(current_model.cond_mark)
            ip_k = self.call_ip(f"{number * 2 + 1}_to_k_ip", emb, q.device)
            ip_v = self.call_ip(f"{number * 2 + 1}_to_v_ip", emb, q.device)
            ip_k, ip_v = map(lambda t: t.view(batch_size, -1, h, head_dim).transpose(1, 2), (ip_k, ip_v))
            ip_out = torch.nn.functional.scaled_dot_product_attention(q, ip_k, ip_v, attn_mask=None, dropout_p=0.0, is_causal=False)
            return ip_out.transpose(1, 2).reshape(batch_size, -1, h * head_dim) * self.weight
        return forward
