"""What the WebUI's prompt machinery means for T-SAM, the same in A1111 and Forge (both keep
A1111's ``prompt_parser`` and ``PromptChunk``): which text a sampler call's cond was built from,
and the names of a chunk's tokens."""

from modules import prompt_parser, sd_samplers, shared

from ..core.diagnostics import token_labels


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
