"""open_clip 2.20's text towers (``open_clip.model.CLIP`` and its ``transformer``), also where
torchvision is missing: the package ``__init__`` imports its image transforms, and ``utils``
imports torchvision's ``FrozenBatchNorm2d`` for freezing vision towers, which text never uses
(``isolated`` explains the loading).

SD 2.x's text encoder is the text half of ``ViT-H-14``, SDXL's second one that of
``ViT-bigG-14``; ldm and sgm build the whole CLIP and delete ``visual``.
"""

import json
import os
import sys

import torch

from .isolated import load as load_isolated, unavailable

TINY_VISION = dict(layers=1, width=32, head_width=32, patch_size=32, image_size=32)


class _Unavailable:
    def __init__(self, *args, **kwargs):
        unavailable()


def load():
    """The ``open_clip`` package object with its real ``model``, ``transformer`` and ``tokenizer``."""
    import transformers  # noqa: F401  (open_clip imports it; it probes for torchvision, which must not be a stand-in then)

    model, _transformer, _tokenizer = load_isolated(
        "open_clip", ["model", "transformer", "tokenizer"], {"torchvision.ops.misc": {"FrozenBatchNorm2d": _Unavailable}})
    return sys.modules["open_clip"]


def text_config(arch: str) -> tuple[int, dict]:
    """(embed_dim, text_cfg) of one of open_clip's model configs, e.g. ``ViT-H-14``."""
    oc = load()
    path = os.path.join(os.path.dirname(oc.model.__file__), "model_configs", f"{arch}.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return config["embed_dim"], config["text_cfg"]


def text_clip(arch: str, head_dim: int | None = None) -> torch.nn.Module:
    """open_clip's ``CLIP`` for ``arch`` with random weights and a token-sized vision tower, which
    the embedder deletes as ldm's and sgm's do. ``head_dim`` narrows every head, keeping the real
    layer and head counts."""
    oc = load()
    embed_dim, text_cfg = text_config(arch)
    if head_dim is not None:
        text_cfg = dict(text_cfg, width=text_cfg["heads"] * head_dim)
        embed_dim = text_cfg["width"]
    return oc.model.CLIP(embed_dim, TINY_VISION, text_cfg)
