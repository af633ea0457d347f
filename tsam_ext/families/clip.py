"""The CLIP text encoders that transformers implements (SD 1.x's CLIP ViT-L; SDXL's CLIP ViT-L;
Forge's text encoders of every family): their self-attention probabilities for whole chunks.

Index convention for one 77-token chunk: position 0 is ``<bos>``, 1..n the prompt's tokens,
n+1 the first ``<eos>``, then padding.
"""

import torch


def clip_self_attention(text_model: torch.nn.Module, input_ids: torch.Tensor,
                        token_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention probabilities [B, L, H, S, S] (float32) of a transformers ``CLIPTextModel``.

    ``input_ids`` [B, S] are whole chunks (``<bos>`` ... ``<eos>`` + padding). ``token_embeds``
    [B, S, D], when given, replaces the token-embedding lookup (position embeddings are still
    added by the model): that is how textual-inversion vectors count as tokens.
    """
    handle = None
    if token_embeds is not None:
        embedding = text_model.get_input_embeddings()
        if token_embeds.shape[:2] != input_ids.shape:
            raise ValueError(f"token_embeds {tuple(token_embeds.shape)} does not match input_ids {tuple(input_ids.shape)}")
        handle = embedding.register_forward_hook(lambda module, args, out: token_embeds.to(out.dtype))
    try:
        with torch.no_grad():
            out = text_model(input_ids=input_ids, output_attentions=True, return_dict=True)
    finally:
        if handle is not None:
            handle.remove()
    return torch.stack([a.float() for a in out.attentions], dim=1)
