"""T from a real CLIPTextModel with the SD1.x text config and the real tokenizer."""

import torch

from tsam_ext.runtime import sd1
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention


def chunk_ids(model, prompt):
    return torch.tensor([c.ids for c in sd1.prompt_chunks(model.tokenizer, prompt)])


def test_self_attention_is_causal_probabilities_of_every_layer_and_head(small_sd):
    att = clip_self_attention(small_sd.text_model, chunk_ids(small_sd, "a black car and a white clock"))
    assert att.shape == (1, 12, 12, 77, 77) and att.dtype == torch.float32
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 12, 12, 77))
    assert torch.count_nonzero(att.triu(1)) == 0  # row i attends to positions <= i only


def test_target_is_lower_triangular_with_rows_summing_to_one(small_sd):
    att = clip_self_attention(small_sd.text_model, chunk_ids(small_sd, "a black car and a white clock"))
    t = text_target(att[0], 7)
    assert t.shape == (7, 7) and torch.equal(t, t.tril())
    # the reference's +1e-7 in the denominator leaves rows 1e-7/sum short of 1; cubed rows sum to ~1e-2
    torch.testing.assert_close(t.sum(1), torch.ones(7), atol=1e-4, rtol=0)
    assert t[1:].max() < 1  # a real binding: no row but the first puts everything on one token


def test_token_embeddings_replace_the_lookup(small_sd):
    ids = chunk_ids(small_sd, "a photo of a cat")
    lookup = small_sd.text_model.get_input_embeddings()(ids).detach()
    same = clip_self_attention(small_sd.text_model, ids, lookup)
    torch.testing.assert_close(same, clip_self_attention(small_sd.text_model, ids))
    inserted = lookup.clone()
    inserted[0, 4] = torch.randn(768, generator=torch.Generator().manual_seed(0))  # a textual-inversion vector at "cat"
    changed = clip_self_attention(small_sd.text_model, ids, inserted)
    assert not torch.allclose(text_target(changed[0], 5), text_target(same[0], 5))
    assert not small_sd.text_model.get_input_embeddings()._forward_hooks  # hook removed
