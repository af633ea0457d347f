"""A random SD1.5 LoRA in kohya's key layout (diffusers module names, ``lora_unet_*`` / ``lora_te_*``),
for trying the WebUI's built-in Lora extension with a random checkpoint.

    python bench/make_random_lora.py OUT.safetensors [--rank 4] [--scale 0.5] [--seed 0]

Keys: ``<name>.lora_down.weight`` (rank x in), ``<name>.lora_up.weight`` (out x rank), ``<name>.alpha``
(= rank); A1111's ``extensions-builtin/Lora/networks.py`` ``convert_diffusers_name_to_compvis`` maps
each name to a CompVis module. ``--scale``: the LoRA's ``up @ down`` is about ``scale`` times a
unit-variance linear map, so the layers it touches change noticeably.
"""

import argparse

import torch
from safetensors.torch import save_file

# (kohya module name, in features, out features): cross-attention q/k at each UNet level, and the
# text encoder's first self-attention q/v.
UNET = [(f"down_blocks_{b}_attentions_{a}_transformer_blocks_0_attn2_to_{w}", i, o)
        for b, c in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1) for w, i, o in (("q", c, c), ("k", 768, c))]
UNET += [(f"mid_block_attentions_0_transformer_blocks_0_attn2_to_{w}", i, 1280) for w, i in (("q", 1280), ("k", 768))]
UNET += [(f"up_blocks_{b}_attentions_{a}_transformer_blocks_0_attn2_to_{w}", i, c)
         for b, c in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2) for w, i in (("q", c), ("k", 768))]
TE = [(f"text_model_encoder_layers_{n}_self_attn_{w}_proj", 768, 768) for n in (0, 1) for w in ("q", "v")]


def lora(rank: int, scale: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, layers in (("lora_unet_", UNET), ("lora_te_", TE)):
        for name, fan_in, fan_out in layers:
            key = prefix + name
            out[f"{key}.lora_down.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
            out[f"{key}.lora_up.weight"] = torch.randn(fan_out, rank, generator=g) * scale / rank ** 0.5
            out[f"{key}.alpha"] = torch.tensor(float(rank))
    return {k: v.contiguous() for k, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    sd = lora(a.rank, a.scale, a.seed)
    save_file(sd, a.out, metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(a.rank),
                                   "ss_network_alpha": str(a.rank)})
    print(f"{a.out}: {len(sd) // 3} modules ({len(UNET)} UNet attn2 q/k, {len(TE)} text encoder)")


if __name__ == "__main__":
    main()
