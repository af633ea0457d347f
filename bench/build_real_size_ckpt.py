"""Random-weight checkpoints at the real size and key layout of released models, offline, for
trying T-SAM in a stock WebUI (Forge's ``huggingface_guess`` recognises only the exact configs of
released models; A1111 guesses its yaml from the same shapes).

  --family sdxl    SDXL base 1.0: UNet 320 ch, mult [1, 2, 4], depth [0, 2, 10], context 2048,
                   adm 2816 (2567.5 M); CLIP-L at ``conditioner.embedders.0.transformer.text_model.*``
                   and OpenCLIP ViT-bigG at ``conditioner.embedders.1.model.*``; VAE. ~6.9 GB.
  --family sd21v   SD 2.1 768-v (v2-inference-v.yaml): UNet 865.9 M, OpenCLIP ViT-H at
                   ``cond_stage_model.model.*``, VAE, ldm's DDPM schedule buffers.
  --family sd21    SD 2.1 512-base: the same layout, eps-prediction.

Nothing is instantiated for real: the modules of each part (the runtime's own ldm / transformers /
open_clip builders) are made on the meta device for key names and shapes, then each leaf module's
tensors are filled one module at a time from a generator seeded by the key name, and streamed to
a .safetensors file (fp16 parameters, fp32 / int64 buffers). Same seed, same bytes; peak memory
is one module.

Init (the libraries' own rules; then the peaky recipe of the harness's build_random_ckpt.py /
build_tiny_models.py, which the runtime's ``randomise`` / ``peaky_*`` also follow):
  UNet, VAE    torch's default U(+-1/sqrt(fan_in)); ldm's zero_module()'d layers (ResBlock
               ``out_layers.3``, ``proj_out`` of the UNet's transformers, ``out.2``) get N(0, 1e-3)
               weights; norm weights 1, biases N(0, 0.02).
  CLIP-L       transformers' init (q/k/v N(0, h^-1/2 (2L)^-1/2), out h^-1/2, fc1 (2h)^-1/2, fc2 as q).
  OpenCLIP     open_clip's init (in_proj N(0, w^-1/2), out_proj / c_proj N(0, w^-1/2 (2L)^-1/2),
               c_fc (2w)^-1/2, text_projection w^-1/2, positional 0.01, logit_scale log(1/0.07)).
  peaky        text: token embeddings N(0, 1), q and k x8, attention-out and MLP-out x0.5;
               UNet attn2: every head = head 0, q and k x4; per resolution level (same width) all
               transformers share the first one's proj_in and attn2 q/k, and the residual branches
               in their blocks (attn1 / attn2 out, ff out) are x0.1, so that the 10 layers of a
               site agree on where each token goes (build_tiny_models.tie_levels).
  sd21v        ``output_blocks.11.1.transformer_blocks.0.norm1.bias`` ~ N(0, 0.15): Forge (and
               ComfyUI) call an SD2 checkpoint v-prediction when that bias's std exceeds 0.09.

Usage: python bench/build_real_size_ckpt.py --family sdxl OUT.safetensors [--seed 0]
Prints the parameter count per part, the file size and its sha256.
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import time
import zlib

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAMILIES = ("sdxl", "sd21v", "sd21")
DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}
VAE_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                  num_res_blocks=2, attn_resolutions=[], dropout=0.0)
TEXT_QK, TEXT_RES, UNET_QK, LEVEL_RES = 8.0, 0.5, 4.0, 0.1
V_BIAS_KEY, V_BIAS_STD = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias", 0.15


class VAE(nn.Module):
    """ldm's AutoencoderKL parts as checkpoints name them: encoder, decoder, quant_conv, post_quant_conv."""

    def __init__(self):
        super().__init__()
        import contextlib
        import io
        from ldm.modules.diffusionmodules.model import Decoder, Encoder
        with contextlib.redirect_stdout(io.StringIO()):  # ldm's Decoder prints its z shape
            self.encoder, self.decoder = Encoder(**VAE_CONFIG), Decoder(**VAE_CONFIG)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(8, 8, 1), nn.Conv2d(4, 4, 1)


def open_clip_text(arch: str) -> nn.Module:
    """open_clip's CLIP for ``arch`` without ``visual``, as ldm's / sgm's embedders keep it."""
    from tsam_ext.runtime import openclip
    model = openclip.text_clip(arch)
    del model.visual
    return model


def meta_parts(family: str) -> dict[str, nn.Module]:
    """{key prefix: module on the meta device} of a family's checkpoint."""
    if family not in FAMILIES:
        raise ValueError(f"family one of {FAMILIES}")
    from tsam_ext.runtime import openclip, sd1, sd2, sdxl
    openclip.load()
    with torch.device("meta"):
        if family == "sdxl":
            return {"model.diffusion_model.": sdxl.sdxl_unet(),
                    "conditioner.embedders.0.transformer.": sd1.clip_text_model(),
                    "conditioner.embedders.1.model.": open_clip_text(sdxl.ARCH),
                    "first_stage_model.": VAE()}
        from ldm.modules.diffusionmodules.openaimodel import UNetModel
        return {"model.diffusion_model.": UNetModel(**sd2.UNET_CONFIG),
                "cond_stage_model.model.": open_clip_text(sd2.ARCH),
                "first_stage_model.": VAE()}


def schedule_buffers() -> dict[str, torch.Tensor]:
    """ldm DDPM.register_schedule's buffers for SD's linear schedule (1000 steps, 0.00085-0.012)."""
    import numpy as np
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    a = np.cumprod(1.0 - betas)
    prev = np.append(1.0, a[:-1])
    post_var = betas * (1.0 - prev) / (1.0 - a)
    b = dict(betas=betas, alphas_cumprod=a, alphas_cumprod_prev=prev, sqrt_alphas_cumprod=np.sqrt(a),
             sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - a), log_one_minus_alphas_cumprod=np.log(1.0 - a),
             sqrt_recip_alphas_cumprod=np.sqrt(1.0 / a), sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / a - 1),
             posterior_variance=post_var, posterior_log_variance_clipped=np.log(np.maximum(post_var, 1e-20)),
             posterior_mean_coef1=betas * np.sqrt(prev) / (1.0 - a),
             posterior_mean_coef2=(1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - a))
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in b.items()}


def extra_tensors(family: str) -> dict[str, torch.Tensor]:
    """Buffers the released files hold: the modules' persistent ones (CLIP's position_ids, which
    transformers 4.30 saved) and ldm's schedule."""
    if family == "sdxl":
        return {"conditioner.embedders.0.transformer.text_model.embeddings.position_ids": torch.arange(77)[None]}
    return schedule_buffers()


def spec(family: str) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype on disk) of every tensor, in file order."""
    out, extra = [], extra_tensors(family)
    for prefix, part in meta_parts(family).items():
        for k, v in part.state_dict().items():
            dtype = extra[prefix + k].dtype if prefix + k in extra else torch.float16
            out.append((prefix + k, tuple(v.shape), dtype))
    seen = {k for k, _, _ in out}
    return out + [(k, tuple(v.shape), v.dtype) for k, v in extra.items() if k not in seen]


def generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def _normal(p, std, g):
    p.copy_(torch.randn(p.shape, generator=g) * std)


def _uniform(p, bound, g):
    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


ZEROED = ("out_layers.3", "proj_out", "out.2")  # ldm's zero_module()'d layers (UNet only)


def init_unet_vae(name: str, m: nn.Module, prefix: str, key, g) -> None:
    """torch's default init; ldm's zero-initialised UNet outputs get small noise; norm biases N(0, 0.02)."""
    if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
        m.weight.fill_(1.0)
        _normal(m.bias, 0.02, g(key("bias")))
        return
    zeroed = prefix == "model.diffusion_model." and name.endswith(ZEROED)
    fan_in = m.weight[0].numel()
    if zeroed:
        _normal(m.weight, 1e-3, g(key("weight")))
    else:
        _uniform(m.weight, 1 / math.sqrt(fan_in), g(key("weight")))
    if m.bias is not None:
        if zeroed:
            m.bias.zero_()
        else:
            _uniform(m.bias, 1 / math.sqrt(fan_in), g(key("bias")))


def init_clip(name: str, m: nn.Module, width: int, layers: int, key, g) -> None:
    """transformers' CLIP init, then the peaky text recipe."""
    qkv = width ** -0.5 * (2 * layers) ** -0.5
    if isinstance(m, nn.LayerNorm):
        m.weight.fill_(1.0)
        _normal(m.bias, 0.02, g(key("bias")))
    elif isinstance(m, nn.Embedding):
        _normal(m.weight, 1.0 if "token_embedding" in name else 0.02, g(key("weight")))
    elif isinstance(m, nn.Linear):
        leaf = name.rsplit(".", 1)[-1]
        std = {"out_proj": width ** -0.5, "fc1": (2 * width) ** -0.5}.get(leaf, qkv)
        _normal(m.weight, std, g(key("weight")))
        m.bias.zero_()
        m.weight.mul_({"q_proj": TEXT_QK, "k_proj": TEXT_QK, "out_proj": TEXT_RES, "fc2": TEXT_RES}.get(leaf, 1.0))


def init_open_clip(name: str, m: nn.Module, width: int, layers: int, key, g) -> None:
    """open_clip's init, then the peaky text recipe (q and k are the first 2/3 of in_proj_weight)."""
    proj = width ** -0.5 * (2 * layers) ** -0.5
    for pname, p in m.named_parameters(recurse=False):
        k = key(pname)
        if isinstance(m, nn.LayerNorm):
            p.fill_(1.0) if pname == "weight" else _normal(p, 0.02, g(k))
        elif pname == "token_embedding" or name == "token_embedding":
            _normal(p, 1.0, g(k))
        elif pname == "positional_embedding":
            _normal(p, 0.01, g(k))
        elif pname == "text_projection":
            _normal(p, width ** -0.5, g(k))
        elif pname == "logit_scale":
            p.fill_(math.log(1 / 0.07))
        elif pname.endswith("bias"):
            p.zero_()
        elif pname == "in_proj_weight":
            _normal(p, width ** -0.5, g(k))
            p[:2 * width].mul_(TEXT_QK)
        else:
            leaf = name.rsplit(".", 1)[-1]
            _normal(p, (2 * width) ** -0.5 if leaf == "c_fc" else proj, g(k))
            if leaf in ("out_proj", "c_proj"):
                p.mul_(TEXT_RES)


class UnetPeaky:
    """attn2 heads tied to head 0 and q/k x4; per width, every transformer shares the first one's
    proj_in and attn2 q/k; residual branches inside the transformer blocks x0.1."""

    RESIDUAL = (".attn1.to_out.0", ".attn2.to_out.0", ".ff.net.2")

    def __init__(self):
        self.first = {}  # (width, "proj_in" | "to_q" | "to_k") -> tensors of the first transformer

    def __call__(self, name: str, m: nn.Module, heads_of) -> None:
        if name.endswith("proj_in") and ".transformer_blocks." not in name and isinstance(m, nn.Linear):
            self._share((m.weight.shape[0], "proj_in"), m)
        elif name.endswith((".attn2.to_q", ".attn2.to_k")):
            heads = heads_of(name.rsplit(".", 1)[0])
            w = m.weight.view(heads, -1, m.weight.shape[1])
            w.copy_(w[:1].expand_as(w) * UNET_QK)
            self._share((m.weight.shape[0], name[-4:]), m)
        elif name.endswith(self.RESIDUAL):
            m.weight.mul_(LEVEL_RES)
            m.bias.mul_(LEVEL_RES)

    def _share(self, slot, m):
        ref = self.first.setdefault(slot, {k: v.clone() for k, v in m.state_dict().items()})
        m.load_state_dict(ref)


def part_kind(prefix: str) -> str:
    if prefix.endswith(".transformer."):
        return "clip"
    return "open_clip" if prefix in ("conditioner.embedders.1.model.", "cond_stage_model.model.") else "ldm"


def tensors(family: str, seed: int = 0):
    """Yields (key, tensor as on disk) in ``spec`` order, one leaf module at a time."""
    g = lambda k: generator(seed, k)  # noqa: E731
    extra = extra_tensors(family)
    for prefix, part in meta_parts(family).items():
        heads = {n: mod.heads for n, mod in part.named_modules() if hasattr(mod, "heads")}
        peaky = UnetPeaky()
        kind = part_kind(prefix)
        if kind == "clip":
            width, layers = part.config.hidden_size, part.config.num_hidden_layers
        elif kind == "open_clip":
            width, layers = part.transformer.width, len(part.transformer.resblocks)
        done = {}
        for name, m in part.named_modules():
            own = dict(m.named_parameters(recurse=False))
            key = lambda p, name=name: prefix + (name + "." if name else "") + p  # noqa: E731
            buffers = [b for b in m._buffers if b not in m._non_persistent_buffers_set]  # saved after the parameters
            if not own:
                yield from ((key(b), extra.pop(key(b))) for b in buffers)
                continue
            m.to_empty(device="cpu", recurse=False)
            with torch.no_grad():
                if kind == "clip":
                    init_clip(name, m, width, layers, key, g)
                elif kind == "open_clip":
                    init_open_clip(name, m, width, layers, key, g)
                else:
                    init_unet_vae(name, m, prefix, key, g)
                    if prefix == "model.diffusion_model.":
                        peaky(name, m, heads.get)
                for pname, p in m.named_parameters(recurse=False):
                    done[key(pname)] = p.detach().half()
                if family == "sd21v" and key("bias") == V_BIAS_KEY:
                    _normal(done[V_BIAS_KEY], V_BIAS_STD, g(V_BIAS_KEY))
            m.to("meta")
            for b in buffers:
                done[key(b)] = extra.pop(key(b))
            for k in list(done):
                yield k, done.pop(k)
    yield from extra.items()


def write(family: str, out: str, seed: int = 0) -> dict:
    """Streams the checkpoint to ``out`` (safetensors format); returns counts and the sha256."""
    entries = spec(family)
    header, offset = {"__metadata__": {"format": "pt", "tsam_random": f"{family} seed {seed}"}}, 0
    for k, shape, dtype in entries:
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[k] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    sha, counts = hashlib.sha256(), {}
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        for chunk in (struct.pack("<Q", len(head)), head):
            f.write(chunk)
            sha.update(chunk)
        order = iter(entries)
        for k, t in tensors(family, seed):
            ek, shape, dtype = next(order)
            assert (ek, shape, dtype) == (k, tuple(t.shape), t.dtype), (ek, k)
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise AssertionError(f"{k} is not finite")
            b = t.contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(b.data)
            sha.update(b.data)
            if dtype == torch.float16:
                part = ".".join(k.split(".")[:3 if k.startswith("conditioner") else 1])
                counts[part] = counts.get(part, 0) + t.numel()
        assert next(order, None) is None
    os.replace(tmp, out)
    return {"family": family, "keys": len(entries), "params_M": {p: round(c / 1e6, 1) for p, c in counts.items()},
            "GiB": round(os.path.getsize(out) / 2 ** 30, 2), "sha256": sha.hexdigest()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("out")
    a = ap.parse_args()
    t0 = time.time()
    r = write(a.family, a.out, a.seed)
    print(json.dumps(dict(r, seconds=round(time.time() - t0, 1))))


if __name__ == "__main__":
    main()
