"""open_clip's text towers (SD 2.x's OpenCLIP ViT-H, SDXL's OpenCLIP ViT-bigG): their
self-attention probabilities for whole chunks, recomputed in float32 per layer and head.

The tower is open_clip's ``CLIP`` without ``visual`` (as ldm's and sgm's embedders hold it):
``token_embedding``, ``positional_embedding``, ``transformer.resblocks`` (each attending through
an ``nn.MultiheadAttention`` called with ``need_weights=False``), the causal ``attn_mask``. The
hosts run it only as far as their conditioning needs (SD 2.x: 23 of 24 blocks); T averages every
block, so this drives the tower through all of them itself.

Index convention for one 77-token chunk: position 0 is ``<start_of_text>``, 1..n the prompt's
tokens, n+1 the first ``<end_of_text>``; every later position is id 0 (the pad A1111 writes).
"""

import math

import torch
import torch.nn.functional as F


def pad_after_end(ids: torch.Tensor, end_id: int, pad_id: int) -> torch.Tensor:
    """``ids`` [B, S] with every position after each row's first ``end_id`` set to ``pad_id``:
    the ids the WebUI feeds open_clip (``process_tokens``); unchanged when pad and end agree."""
    if pad_id == end_id:
        return ids
    is_end = ids == end_id
    if not is_end.any(dim=1).all():
        raise ValueError("every chunk must hold an end token")
    first = is_end.int().argmax(dim=1, keepdim=True)
    return ids.masked_fill(torch.arange(ids.shape[1], device=ids.device)[None] > first, pad_id)


def mha_probabilities(mha: torch.nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                      attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) [N, H, Lq, Lk] in float32 of one ``nn.MultiheadAttention``
    call, from its own packed input projection. ``query`` / ``key`` are as the module takes them
    ([L, N, E], or [N, L, E] when ``batch_first``)."""
    if not mha.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e, heads = mha.embed_dim, mha.num_heads
    d = e // heads
    weight = mha.in_proj_weight.float()
    bias = mha.in_proj_bias.float() if mha.in_proj_bias is not None else None
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.linear(query.float(), weight[:e], None if bias is None else bias[:e])
        k = F.linear(key.float(), weight[e:2 * e], None if bias is None else bias[e:2 * e])
        q = q.reshape(q.shape[0], q.shape[1], heads, d).transpose(1, 2)
        k = k.reshape(k.shape[0], k.shape[1], heads, d).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
        if attn_mask is not None:
            logits = logits + attn_mask.float()
        return logits.softmax(dim=-1)


def open_clip_self_attention(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Self-attention probabilities [B, L, H, S, S] (float32) of every block of an open_clip text tower.

    ``input_ids`` [B, S] are whole chunks, already padded with 0 after the first end token. The
    token embedding is called as a module, so a host's wrapper of it (the WebUI's textual-
    inversion ``EmbeddingsWithFixes``, its --medvram device hook) does what it does for the
    host's own text pass.
    """
    maps: list[torch.Tensor] = []

    def record(mha, args, kwargs):
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        maps.append(mha_probabilities(mha, query, key, kwargs.get("attn_mask")))

    blocks = list(model.transformer.resblocks)
    handles = [block.attn.register_forward_pre_hook(record, with_kwargs=True) for block in blocks]
    try:
        with torch.no_grad():
            x = model.token_embedding(input_ids)
            x = x + model.positional_embedding.to(x.dtype)
            if not getattr(model.transformer, "batch_first", False):
                x = x.transpose(0, 1)  # open_clip 2.20 is sequence-first: [S, B, E]
            for block in blocks:
                x = block(x, attn_mask=model.attn_mask)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(maps, dim=1)
