"""Text targets from the WebUI's own tokenization: BREAK, long prompts, emphasis, textual
inversion, prompt editing, alternation and AND; independent of the cond cache."""

import torch

from modules import prompt_parser, sd_hijack, shared
from tsam_ext.core import controller
from tsam_ext.host.a1111 import text
from tsam_ext.core.text_maps import text_target
from tsam_ext.families.clip import clip_self_attention

REAL_GUIDE = controller.GuidedPass.guide
WORDS = "red apple green pear yellow lemon blue plum purple grape orange peach".split()


def targets(prompt):
    return text.TextTargets(shared.sd_model, 3.0, "reference")[prompt]


def core_target(ids, n, token_embeds=None):
    att = clip_self_attention(shared.sd_model.cond_stage_model.wrapped.transformer, torch.tensor([ids]), token_embeds)
    return text_target(att[0], n)


def test_break_and_long_prompts_give_one_target_per_chunk(webui):
    broken = targets("a cat BREAK a dog and a bird")
    assert [c.n for c in broken] == [2, 5] and [c.offset for c in broken] == [0, 77]
    long = " ".join(WORDS * 10)  # 120 tokens, no comma: 75 + 45
    chunks = targets(long)
    assert [c.n for c in chunks] == [75, 45] and [c.offset for c in chunks] == [0, 77]
    tok = shared.sd_model.cond_stage_model.tokenizer
    ids = tok(long, add_special_tokens=False)["input_ids"]
    second = [49406] + ids[75:] + [49407] * (76 - 45)
    torch.testing.assert_close(chunks[1].t, core_target(second, 45))


def test_comma_backtrack_moves_tokens_like_the_webui(webui):
    prompt = ", ".join(" ".join(WORDS[i:i + 4]) for i in range(0, 12, 4)) * 5  # commas near the 75th token
    cm = shared.sd_model.cond_stage_model
    chunks, _ = cm.tokenize_line(prompt)
    got = targets(prompt)
    assert [c.n for c in got] == [ch.tokens.index(cm.id_end, 1) - 1 for ch in chunks]
    assert got[0].n < 75  # the chunk was closed at the last comma


def test_emphasis_does_not_change_the_target(webui):
    plain, weighted = targets("a black car and a white clock"), targets("a (black:1.5) car and a [white] clock")
    torch.testing.assert_close(plain[0].t, weighted[0].t)


def test_textual_inversion_vectors_count_as_tokens(webui):
    cm = shared.sd_model.cond_stage_model
    vec = torch.randn(2, 768, generator=torch.Generator().manual_seed(5))
    embedding = sd_hijack.Embedding(vec, "tsamstyle")
    ids = cm.tokenizer("tsamstyle", add_special_tokens=False)["input_ids"]
    sd_hijack.model_hijack.embedding_db.register(embedding, ids)
    try:
        got = targets("a photo of tsamstyle")
    finally:
        sd_hijack.model_hijack.embedding_db.ids_lookup.clear()
    assert got[0].n == 5  # "a photo of" + the embedding's 2 vectors
    chunk_ids = [49406] + cm.tokenizer("a photo of", add_special_tokens=False)["input_ids"] + [0, 0] + [49407] * 71
    embeds = cm.wrapped.transformer.get_input_embeddings().wrapped(torch.tensor([chunk_ids])).clone()
    embeds[0, 4:6] = vec
    torch.testing.assert_close(got[0].t, core_target(chunk_ids, 5, embeds))
    assert sd_hijack.model_hijack.fixes is None


def guided_rows(webui, monkeypatch, **kwargs):
    """The rows each guided step was given: [(step, [(image, chunk n's), ...]), ...]."""
    seen = []

    def spy(self, x, step, rows, *args):
        seen.append((step, [(r.image, tuple(c.n for c in r.chunks)) for r in rows]))
        return REAL_GUIDE(self, x, step, rows, *args)

    monkeypatch.setattr(controller.GuidedPass, "guide", spy)
    defaults = dict(tsam=dict(enabled=True, refine=False, guided_steps=100), steps=6, sampler_name="Euler")
    p, res = webui.generate(**(defaults | kwargs))
    return seen, res


def test_prompt_editing_targets_follow_the_active_text(webui, monkeypatch):
    seen, _ = guided_rows(webui, monkeypatch, prompt="a [red cat:small black dog:0.5] on a mat")
    lengths = [rows[0][1][0] for _step, rows in seen]
    switch = prompt_parser.get_learned_conditioning_prompt_schedules(["a [red cat:small black dog:0.5] on a mat"], 6)[0][0][0]
    assert switch == 3
    assert lengths == [6 if step <= switch else 7 for step in range(6)]  # the WebUI's rule: step <= end_at_step


def test_alternation_changes_the_target_with_the_conditioning(webui, monkeypatch):
    prompt = "a [cat|small dog] on a mat"
    seen, _ = guided_rows(webui, monkeypatch, prompt=prompt)
    schedule = prompt_parser.get_learned_conditioning_prompt_schedules([prompt], 6)[0]
    active = [next(text for end, text in schedule if step <= end) for step in range(6)]  # reconstruct's rule
    assert [rows[0][1][0] for _step, rows in seen] == [5 if "cat" in text else 6 for text in active]
    assert len(set(active)) == 2


def test_and_subprompts_each_have_their_own_target(webui, monkeypatch):
    seen, _ = guided_rows(webui, monkeypatch, prompt="a red cube on a table AND a blue sphere :1.2")
    assert seen[0][1] == [(0, (6,)), (0, (3,))]


def test_batch_of_different_prompts_each_get_their_own_target(webui, monkeypatch):
    prompts = ["a black car and a white clock", "a cat", "a dog chasing a red ball"]
    seen, res = guided_rows(webui, monkeypatch, prompt=prompts, batch_size=3)
    assert seen[0][1] == [(0, (7,)), (1, (2,)), (2, (6,))]
    assert len(res.latents) == 3


def test_cached_conds_still_get_targets(webui, monkeypatch):
    """A repeated prompt is served from the WebUI's cond cache; T is computed all the same."""
    calls = []
    cm = shared.sd_model.cond_stage_model
    real_forward = type(cm).forward
    monkeypatch.setattr(type(cm), "forward", lambda self, texts: calls.append(list(texts)) or real_forward(self, texts))
    first, res1 = guided_rows(webui, monkeypatch)
    encoded = len(calls)
    second, res2 = guided_rows(webui, monkeypatch)
    assert len(calls) == encoded, "the second run's conds came from the cache"
    assert second == first and len(second) == 6
    assert torch.equal(res1.latents[0], res2.latents[0])
