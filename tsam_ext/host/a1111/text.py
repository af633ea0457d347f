"""Text targets for the WebUI's prompts, from the exact chunks the WebUI builds.

Each text goes through the model's own ``cond_stage_model.tokenize_line`` (BREAK, emphasis,
textual-inversion embeddings, comma padding, 75-token chunks) and its own CLIP transformer
with attentions returned, textual-inversion vectors inserted through ``model_hijack.fixes`` as
the WebUI does. Nothing relies on the WebUI's cond cache: a cached prompt still gets its T.
"""

import torch

from modules import devices, prompt_parser, sd_hijack, sd_samplers, shared

from ...core.diagnostics import token_labels
from ...core.guidance import CHUNK, ChunkTarget
from ...core.text_maps import text_target
from ...families.clip import clip_self_attention


class TextTargets:
    """T of every chunk of a text, computed once per distinct text of a generation."""

    def __init__(self, sd_model, gamma: float, order: str):
        self.sd_model, self.gamma, self.order = sd_model, gamma, order
        self.cache: dict[str, tuple[ChunkTarget, ...]] = {}

    def prepare(self, texts) -> None:
        """Encode every new text in one CLIP call (before sampling: with --medvram the text
        encoder and the UNet take turns on the GPU)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not todo:
            return
        cm = self.sd_model.cond_stage_model
        per_text = [cm.tokenize_line(t)[0] for t in todo]
        chunks = [c for cs in per_text for c in cs]
        ids = torch.asarray([c.tokens for c in chunks], device=devices.device)
        sd_hijack.model_hijack.fixes = [c.fixes for c in chunks]
        try:
            with devices.autocast():
                attentions = clip_self_attention(cm.wrapped.transformer, ids)
        finally:
            sd_hijack.model_hijack.fixes = None
        k = 0
        for text, cs in zip(todo, per_text):
            targets = []
            for index, chunk in enumerate(cs):
                n = chunk.tokens.index(cm.id_end, 1) - 1
                targets.append(ChunkTarget(text_target(attentions[k], n, self.gamma, self.order), CHUNK * index,
                                           labels(cm.tokenizer, chunk, n)))
                k += 1
            self.cache[text] = tuple(targets)

    def __getitem__(self, text: str) -> tuple[ChunkTarget, ...]:
        self.prepare([text])
        return self.cache[text]


def labels(tokenizer, chunk, n: int) -> tuple[str, ...]:
    """Names of a chunk's n tokens; a textual-inversion embedding's vectors are named after it."""
    names = list(token_labels(tokenizer, chunk.tokens[1:n + 1]))
    for offset, embedding in chunk.fixes:
        for k in range(int(embedding.vectors)):
            if offset + k < n:
                names[offset + k] = f"{embedding.name}[{k}]" if embedding.vectors > 1 else embedding.name
    return tuple(names)


def schedules(p, hires: bool) -> list[list[list[list]]]:
    """Per image, per AND sub-prompt: the prompt-editing schedule ``[[end_at_step, text], ...]``,
    computed with the same arguments the WebUI used for this pass's conds."""
    prompts = list(p.hr_prompts if hires else p.prompts)
    res_indexes, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
    hires_steps = None
    if hires:
        config = sd_samplers.find_sampler_config(getattr(p, "hr_sampler_name", None) or p.sampler_name)
        steps = p.hr_second_pass_steps or p.steps
        hires_steps = config.total_steps(steps) if config else steps
    flat_schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
        list(flat), p.firstpass_steps, hires_steps, shared.opts.use_old_scheduling)
    return [[flat_schedules[index] for index, _weight in indexes] for indexes in res_indexes]


def active_text(text_schedule: list[list], cond_schedules, step: int) -> str | None:
    """The text whose cond the WebUI uses at denoiser call ``step`` (``reconstruct_multicond_batch``'s
    rule: the first entry whose end_at_step is at or after the step)."""
    ends = [entry.end_at_step for entry in cond_schedules]
    if ends != [end for end, _text in text_schedule]:
        return None
    index = next((i for i, end in enumerate(ends) if step <= end), 0)
    return text_schedule[index][1]
