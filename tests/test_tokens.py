"""Real token positions: the CLIP BPE vocabulary of open-clip-torch, through transformers' CLIPTokenizer."""

import json
import os

import pytest

from tsam_ext.runtime import sd1
from tsam_ext.runtime.clip_vocab import clip_tokenizer

PROMPTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "prompts")


def test_known_prompt_ids():
    ids = clip_tokenizer()("a black car and a white clock")["input_ids"]
    assert ids == [49406, 320, 1449, 1615, 537, 320, 1579, 6716, 49407]


@pytest.mark.parametrize("name", ["ae_animals", "ae_animals_objects", "ae_objects"])
def test_prompt_sets_token_indices_are_real_positions(name):
    """The research line's noun/adjective indices point at those words in our 77-token chunks."""
    tok = clip_tokenizer()
    prompts = open(os.path.join(PROMPTS, name + ".txt")).read().splitlines()
    index = json.load(open(os.path.join(PROMPTS, name + "_token_index.json")))
    assert len(index) == len(prompts)
    for k, prompt in enumerate(prompts):
        words, positions = index[str(k)]
        chunk = sd1.prompt_chunks(tok, prompt)[0]
        for role, word in words.items():
            (pos,) = positions[role]
            assert tok.decode([chunk.ids[pos]]).strip() == word, (prompt, role)


def test_chunks_follow_a1111_layout():
    tok = clip_tokenizer()
    long = ", ".join(["a red apple"] * 30)  # 119 tokens
    chunks = sd1.prompt_chunks(tok, long)
    assert len(chunks) == 2 and [c.n for c in chunks] == [75, len(tok(long)["input_ids"]) - 2 - 75]
    for c in chunks:
        assert len(c.ids) == 77 and c.ids[0] == 49406 and c.ids[c.n + 1:] == (49407,) * (76 - c.n)
    empty = sd1.prompt_chunks(tok, "")
    assert [c.n for c in empty] == [0] and empty[0].ids == (49406,) + (49407,) * 76
