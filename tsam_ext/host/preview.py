"""T for the prompt in the prompt box, before generating: the loaded text encoder only, no sampling.

Each AND sub-prompt and each 77-token chunk gets its own heatmap (chunks never mix); prompt
editing and alternation show the text of the first sampling step; extra-network tags are removed
as the WebUI does.
"""

import gradio as gr

from modules import extra_networks, prompt_parser

from ..core import diagnostics
from .job import unsupported_model
from .backend import current as backend


def first_step_texts(prompt: str) -> list[str]:
    """The sub-prompts of ``prompt`` as the first sampling step sees them."""
    prompt = extra_networks.parse_prompts([prompt])[0][0]
    _, subprompts, _ = prompt_parser.get_multicond_prompt_list([prompt])
    # enough steps that "[a:b:0.3]" keeps its first part (with 1 step every switch would be at step 0)
    schedules = prompt_parser.get_learned_conditioning_prompt_schedules(list(subprompts), 1000)
    return [schedule[0][1] for schedule in schedules]


def panels(prompt: str, gamma, order: str, text_encoder: str = "both") -> list[tuple[str, "diagnostics.Image.Image"]]:
    """(title, heatmap of T) for every chunk of every sub-prompt; raises gr.Error with a reason instead."""
    return backend.with_model(lambda sd_model: model_panels(sd_model, prompt, gamma, order, text_encoder))


def model_panels(sd_model, prompt: str, gamma, order: str, text_encoder: str) -> list[tuple[str, "diagnostics.Image.Image"]]:
    reason = unsupported_model(sd_model)
    if reason:
        raise gr.Error(f"T-SAM preview: {reason}")
    targets = backend.TextTargets(sd_model, float(gamma), order, text_encoder, warn=lambda m: print(f"T-SAM preview: {m}"))
    texts = first_step_texts(prompt or "")
    targets.prepare(texts)
    if not any(chunk.n for text in texts for chunk in targets[text]):
        raise gr.Error("T-SAM preview: the prompt has no tokens")
    out = []
    for k, text in enumerate(texts):
        chunks = targets[text]
        for c, chunk in enumerate(chunks):
            where = (f"sub-prompt {k + 1}, " if len(texts) > 1 else "") + (f"chunk {c + 1}, " if len(chunks) > 1 else "")
            title = f"T ({where}{encoder_note(targets)}gamma {float(gamma):g}, {order} order)"
            out.append((title, diagnostics.heatmap(chunk.t, list(chunk.labels), title)))
    return out


def encoder_note(targets) -> str:
    """Which encoders T came from, when the model has a choice (SDXL)."""
    return "" if len(targets.available(targets.sd_model)) < 2 else " + ".join(e.name for e in targets.encoders) + ", "


def preview(prompt: str, gamma, order: str, text_encoder: str = "both"):
    """The panels, one under another: the picture the Preview button shows."""
    return diagnostics.stack([image for _, image in panels(prompt, gamma, order, text_encoder)])
