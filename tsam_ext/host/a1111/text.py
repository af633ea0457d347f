"""Text targets for the WebUI's prompts, from the exact chunks the WebUI builds.

The loaded model's text encoders are the WebUI's own wrappers: SD 1.x's CLIP ViT-L
(``cond_stage_model``), SD 2.x's OpenCLIP ViT-H (``cond_stage_model``), SDXL's CLIP ViT-L and
OpenCLIP ViT-bigG (the text embedders of ``conditioner``; the refiner has bigG only). Each text
goes through each encoder's own ``tokenize_line`` (BREAK, emphasis, textual-inversion
embeddings, comma padding, 75-token chunks), its ids are rewritten as the WebUI feeds them (open_clip:
0 after the first end token), textual-inversion vectors are inserted through
``model_hijack.fixes`` as the WebUI does, and every layer of the tower is read (the WebUI itself
stops SD 2.x's one block early). Nothing relies on the WebUI's cond cache: a cached prompt still
gets its T.
"""

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from modules import devices, prompt_parser, sd_hijack, sd_samplers, shared

from ...core.diagnostics import token_labels
from ...core.guidance import CHUNK, ChunkTarget
from ...core.text_maps import text_target
from ...families.clip import clip_self_attention
from ...families.encoders import BIGG, CLIP_L, OPENCLIP_H, aligned, chosen
from ...families.open_clip import open_clip_self_attention, pad_after_end


class UnsupportedText(RuntimeError):
    """The model's text encoder is none T-SAM can read (CLIP through transformers, open_clip)."""


@dataclass(frozen=True)
class Encoder:
    """One text encoder of the loaded model: its name (``families.encoders``) and the WebUI's wrapper."""
    name: str
    wrapper: object

    def attention(self, ids: torch.Tensor) -> torch.Tensor:
        """Self-attention [B, L, H, 77, 77] of chunk ids [B, 77] as ``tokenize_line`` made them."""
        w = self.wrapper
        ids = pad_after_end(ids, w.id_end, w.id_pad)  # as process_tokens feeds the tower
        if self.name == CLIP_L:
            return clip_self_attention(w.wrapped.transformer, ids)
        return open_clip_self_attention(w.wrapped.model, ids)


def encoders(sd_model) -> list[Encoder]:
    """The text encoders whose output conditions the UNet, in the conditioner's order."""
    conditioner = getattr(sd_model, "conditioner", None)
    wrappers = ([e for e in conditioner.embedders if hasattr(e, "tokenize_line")] if conditioner is not None
                else [getattr(sd_model, "cond_stage_model", None)])
    found = []
    for w in wrappers:
        wrapped = getattr(w, "wrapped", None)
        if hasattr(getattr(wrapped, "transformer", None), "text_model"):
            found.append(Encoder(CLIP_L, w))
        elif hasattr(getattr(getattr(wrapped, "model", None), "transformer", None), "resblocks"):
            found.append(Encoder(BIGG if conditioner is not None else OPENCLIP_H, w))
        else:
            raise UnsupportedText(f"the text encoder {type(w).__name__} is not one T-SAM can read (CLIP, OpenCLIP)")
    if not found:
        raise UnsupportedText("the model has no text encoder")
    return found


def place_conditioner(sd_model) -> None:
    """Under --medvram / --medvram-sdxl / --lowvram the WebUI moves SDXL's text encoders to the GPU
    by a forward pre-hook on the whole ``conditioner`` (lowvram.py), which calling the embedders
    directly never fires: fire it, as the WebUI's own text pass does. (SD 1.x and 2.x hook the
    modules T-SAM calls itself: the CLIP transformer, open_clip's token embedding.)"""
    conditioner = getattr(sd_model, "conditioner", None)
    if conditioner is None or not getattr(sd_model, "lowvram", False):
        return
    for key, hook in list(conditioner._forward_pre_hooks.items()):
        if key in conditioner._forward_pre_hooks_with_kwargs:
            hook(conditioner, (), {})
        else:
            hook(conditioner, ())


def vocabulary(encoder: Encoder):
    """Something with ``convert_ids_to_tokens`` for labels: the HF tokenizer, or open_clip's BPE."""
    tokenizer = getattr(encoder.wrapper, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    from modules import sd_hijack_open_clip

    decoder = sd_hijack_open_clip.tokenizer.decoder
    return SimpleNamespace(convert_ids_to_tokens=lambda ids: [decoder[i] for i in ids])


class TextTargets:
    """T of every chunk of a text, computed once per distinct text of a generation, from the
    encoders ``text_encoder`` picks (``families.encoders.chosen``)."""

    def __init__(self, sd_model, gamma: float, order: str, text_encoder: str = "both", warn=print):
        self.sd_model, self.gamma, self.order, self.warn = sd_model, gamma, order, warn
        available = encoders(sd_model)
        names = chosen([e.name for e in available], text_encoder)
        self.encoders = [e for e in available if e.name in names]
        self.cache: dict[str, tuple[ChunkTarget, ...]] = {}

    def prepare(self, texts) -> None:
        """Encode every new text, one batched call per encoder (before sampling: with --medvram
        the text encoders and the UNet take turns on the GPU)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if not todo:
            return
        place_conditioner(self.sd_model)
        chunks = {e.name: [e.wrapper.tokenize_line(t)[0] for t in todo] for e in self.encoders}
        attention = {e.name: self._attention(e, [c for cs in chunks[e.name] for c in cs]) for e in self.encoders}
        first = {e.name: 0 for e in self.encoders}  # each encoder's row of the text's first chunk
        names = tuple(e.name for e in self.encoders)
        for i, text in enumerate(todo):
            used = aligned({n: [tuple(c.tokens) for c in chunks[n][i]] for n in names}, names)
            if used != names:
                self.warn(f"the text encoders cut {text!r} into different tokens, so their positions do not match; "
                          f"T comes from {used[0]} alone")
            encoder = next(e for e in self.encoders if e.name == used[0])
            targets = []
            for k, chunk in enumerate(chunks[used[0]][i]):
                n = chunk.tokens.index(encoder.wrapper.id_end, 1) - 1
                t = text_target([attention[name][first[name] + k] for name in used], n, self.gamma, self.order)
                targets.append(ChunkTarget(t, CHUNK * k, labels(vocabulary(self.encoders[0]), chunk, n)))
            for name in names:
                first[name] += len(chunks[name][i])
            self.cache[text] = tuple(targets)

    @staticmethod
    def _attention(encoder: Encoder, chunks) -> torch.Tensor:
        ids = torch.asarray([c.tokens for c in chunks], device=devices.device)
        sd_hijack.model_hijack.fixes = [c.fixes for c in chunks]
        try:
            with devices.autocast():
                return encoder.attention(ids)
        finally:
            sd_hijack.model_hijack.fixes = None

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
