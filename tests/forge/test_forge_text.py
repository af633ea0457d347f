"""Text targets from Forge's text engine: its own chunks (BREAK, long prompts, comma backtrack,
emphasis, textual inversion through ``embeddings.fixes``), encoded with the CLIP patcher loaded,
and usable by the guidance pass although Forge prepares them inside inference mode."""

import importlib

import torch

from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention

WORDS = "red apple green pear yellow lemon blue plum purple grape orange peach".split()


def targets(forge, prompt):
    return importlib.import_module("tsam_ext.host.forge.text").TextTargets(forge.model, 3.0, "reference")[prompt]


def engine(forge):
    return forge.model.text_processing_engine


def core_target(forge, ids, n, token_embeds=None):
    att = clip_self_attention(engine(forge).text_encoder.transformer, torch.tensor([ids]), token_embeds)
    return text_target(att[0], n)


def test_break_and_long_prompts_give_one_target_per_chunk(forge):
    broken = targets(forge, "a cat BREAK a dog and a bird")
    assert [c.n for c in broken] == [2, 5] and [c.offset for c in broken] == [0, 77]
    long = " ".join(WORDS * 10)  # 120 tokens, no comma: 75 + 45
    chunks = targets(forge, long)
    assert [c.n for c in chunks] == [75, 45] and [c.offset for c in chunks] == [0, 77]
    ids = engine(forge).tokenizer(long, add_special_tokens=False)["input_ids"]
    second = [49406] + ids[75:] + [49407] * (76 - 45)
    torch.testing.assert_close(chunks[1].t, core_target(forge, second, 45))


def test_comma_backtrack_and_emphasis_follow_the_engine(forge):
    prompt = ", ".join(" ".join(WORDS[i:i + 4]) for i in range(0, 12, 4)) * 5
    chunks, _ = engine(forge).tokenize_line(prompt)
    got = targets(forge, prompt)
    assert [c.n for c in got] == [ch.tokens.index(49407, 1) - 1 for ch in chunks] and got[0].n < 75
    torch.testing.assert_close(targets(forge, "a black car and a white clock")[0].t,
                               targets(forge, "a (black:1.5) car and a [white] clock")[0].t)


def test_textual_inversion_vectors_count_as_tokens(forge):
    eng = engine(forge)
    ti = importlib.import_module("backend.text_processing.textual_inversion")
    vec = torch.randn(2, 768, generator=torch.Generator().manual_seed(5))
    ids = eng.tokenizer("tsamstyle", add_special_tokens=False)["input_ids"]
    eng.embeddings.register(ti.Embedding(vec, "tsamstyle"), ids)
    try:
        got = targets(forge, "a photo of tsamstyle")
    finally:
        eng.embeddings.ids_lookup.clear()
    prefix = eng.tokenizer("a photo of", add_special_tokens=False)["input_ids"]
    n = len(prefix) + 2
    chunk = [49406] + prefix + [0, 0] + [49407] * (76 - n)
    inputs = eng.text_encoder.transformer.text_model.embeddings.token_embedding.wrapped(torch.tensor([chunk])).detach().clone()
    inputs[0, 1 + len(prefix):1 + n] = vec
    assert got[0].n == n and got[0].labels[-2:] == ("tsamstyle[0]", "tsamstyle[1]")
    torch.testing.assert_close(got[0].t, core_target(forge, chunk, n, token_embeds=inputs))
    assert eng.embeddings.fixes is None


def test_targets_are_encoded_with_the_text_encoder_loaded_and_are_normal_tensors(forge):
    memory = importlib.import_module("backend.memory_management")
    memory.current_loaded_models.clear()
    with torch.inference_mode():  # where Forge calls process_before_every_sampling
        got = targets(forge, "a red cube on a blue box")
    assert memory.current_loaded_models[0].model is forge.model.forge_objects.clip.patcher
    assert not got[0].t.is_inference(), "the guidance pass saves T for its backward pass"
