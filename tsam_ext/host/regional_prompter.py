"""Regional Prompter (hako-mikan/sd-webui-regional-prompter, read at be62345): why T-SAM does
not guide a generation it is active in, and how it tells. ``scripts/rp.py``'s ``Script`` (title
"Regional Prompter") sets ``active`` and the generation mode ``calc`` in its ``process``.

In Attention mode every attn2 layer's ``forward`` is Regional Prompter's
(``scripts/attention.py`` ``hook_forward``): it splits the text by region and masks each region's
output, so the maps T-SAM reads (each layer's softmax over the whole prompt) are not what the
layer computes; and it flips its cond/uncond state every 16 attn2 calls (70 on SDXL) counted
across UNet passes, so T-SAM's extra, truncated pass would shift that state for the rest of the
generation. In Latent mode each region is a sub-prompt whose UNet output Regional Prompter masks
into its region, while T-SAM would align each sub-prompt's maps over the whole image. Neither is
the UNet call T-SAM must guide, so T-SAM declines before any extra call: the image is Regional
Prompter's alone.
"""

TITLE = "Regional Prompter"


def blocks_guidance(p) -> str | None:
    """Why Regional Prompter, active in this generation, stops T-SAM; None when it is not active.
    Read after every script's ``process`` (Regional Prompter sets ``active`` there)."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or []:
        if script.title() == TITLE and getattr(script, "active", False):
            mode = getattr(script, "calc", "Attention")
            return (f"Regional Prompter is active ({mode} mode): its regions change what the UNet's cross-attention "
                    f"reads, which T-SAM cannot guide yet")
    return None
