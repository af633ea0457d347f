"""Standalone txt2img for SD1.x through k-diffusion's real samplers, with or without T-SAM.

The explicit steps of a generation (as diffusers' pipelines lay them out): tokenize and encode,
text targets, noise, sampler with a CFG denoiser that lets T-SAM move the latent on guided
steps, decode. Used by ``python -m tsam_ext``, the benchmark, the evaluation and the tests.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.controller import GuidedPass
from ..core.diagnostics import token_labels
from ..core.guidance import CHUNK, ChunkTarget, RowTarget
from ..core.recorder import Recorder
from ..core.samplers import profile_for, step_count
from ..core.schedule import Refinement, make_plan
from ..core.settings import Settings
from ..core.text_maps import text_target
from ..core.zspace import unet_input_scale, unet_timestep
from ..families.clip import clip_self_attention
from . import kdiffusion
from .sd1 import SD1, PromptChunk, prompt_chunks

SAMPLERS = {  # A1111 label -> (k-diffusion function, schedule)
    "Euler a": ("sample_euler_ancestral", "default"), "Euler": ("sample_euler", "default"),
    "LMS": ("sample_lms", "default"), "Heun": ("sample_heun", "default"),
    "DPM2": ("sample_dpm_2", "karras"), "DPM2 a": ("sample_dpm_2_ancestral", "karras"),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras"), "DPM++ 2M": ("sample_dpmpp_2m", "karras"),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras"), "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential"),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "exponential"),
}


def text_rows(model: SD1, prompts: list[str], gamma: float, order: str) -> tuple[list[RowTarget], list[list[PromptChunk]]]:
    """One row per prompt, each chunk with its T (row i belongs to image i)."""
    rows, all_chunks = [], []
    for i, prompt in enumerate(prompts):
        chunks = prompt_chunks(model.tokenizer, prompt)
        att = clip_self_attention(model.text_model, torch.tensor([c.ids for c in chunks], device=model.device))
        rows.append(RowTarget(i, tuple(ChunkTarget(text_target(att[k], c.n, gamma, order), CHUNK * k,
                                                   token_labels(model.tokenizer, c.ids[1:c.n + 1]))
                                       for k, c in enumerate(chunks))))
        all_chunks.append(chunks)
    return rows, all_chunks


def stack_conds(conds: list[torch.Tensor]) -> torch.Tensor:
    """[B, 77k, D] from per-prompt [1, 77k_i, D], shorter ones padded with their last vector (as A1111)."""
    length = max(c.shape[1] for c in conds)
    return torch.cat([torch.cat([c, c[:, -1:].expand(1, length - c.shape[1], -1)], dim=1) for c in conds])


class CFGDenoiser(nn.Module):
    """Classifier-free guidance over k-diffusion's CompVis wrapper; T-SAM moves x first on guided steps."""

    def __init__(self, model_wrap: nn.Module, cond: torch.Tensor, uncond: torch.Tensor, scale: float,
                 guided: GuidedPass | None = None, rows: list[RowTarget] | None = None):
        super().__init__()
        self.model_wrap, self.cond, self.uncond, self.scale = model_wrap, cond, uncond, scale
        self.guided, self.rows = guided, rows

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.guided is not None:
            step = self.guided.begin_call()
            if step is not None:
                t = unet_timestep(self.model_wrap, sigma)
                run = lambda z, ids: self.model_wrap.inner_model.apply_model(z, t[[self.rows[i].image for i in ids]], self.cond[ids])
                self.guided.guide(x, step, self.rows, run, unet_input_scale(self.model_wrap, sigma))
        if self.cond.shape[1] == self.uncond.shape[1]:
            out = self.model_wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([self.cond, self.uncond]))
            cond_out, uncond_out = out.chunk(2)
        else:
            cond_out = self.model_wrap(x, sigma, cond=self.cond)
            uncond_out = self.model_wrap(x, sigma, cond=self.uncond)
        return uncond_out + (cond_out - uncond_out) * self.scale


@dataclass
class Generation:
    latents: torch.Tensor
    images: torch.Tensor | None
    guided: GuidedPass | None = None
    chunks: list[list[PromptChunk]] = field(default_factory=list)
    rows: list[RowTarget] = field(default_factory=list)


def initial_noise(seeds: list[int], shape: tuple[int, ...], device) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)


def generate(model: SD1, prompts: list[str], seeds: list[int], settings: Settings | None = None, *,
             negative: str = "", steps: int = 20, cfg_scale: float = 7.5, width: int = 512, height: int = 512,
             sampler: str = "DPM++ 2M", decode: bool = True, keep_maps: bool = False, truncate: bool = True,
             refinement: Refinement = Refinement(), log=print, make_pass=GuidedPass) -> Generation:
    """Generate one image per prompt (``seeds[i]`` for prompt i); T-SAM runs when ``settings.enabled``.

    ``make_pass`` builds the per-pass guidance state (``GuidedPass`` or a subclass with another
    ``guide``, as the benchmark's reference-strategy baseline)."""
    sampling, external = kdiffusion.load()
    func_name, schedule = SAMPLERS[sampler]
    model_wrap = external.CompVisDenoiser(model)
    sigma_min, sigma_max = float(model_wrap.sigmas[0]), float(model_wrap.sigmas[-1])
    sigmas = {"default": lambda: model_wrap.get_sigmas(steps),
              "karras": lambda: sampling.get_sigmas_karras(steps, sigma_min, sigma_max),
              "exponential": lambda: sampling.get_sigmas_exponential(steps, sigma_min, sigma_max)}[schedule]().to(model.device)

    chunks = [prompt_chunks(model.tokenizer, p) for p in prompts]
    cond = stack_conds([model.encode(c) for c in chunks])
    uncond = model.encode(prompt_chunks(model.tokenizer, negative)).expand(len(prompts), -1, -1)
    guided, rows = None, []
    if settings is not None and settings.enabled:
        rows, _ = text_rows(model, prompts, settings.gamma, settings.target_order)
        plan = make_plan(step_count(func_name, {"sigmas": sigmas}, steps), settings.alpha, settings.guided_fraction,
                         Refinement(settings.refine_iterations, refinement.extra, refinement.tolerance,
                                    refinement.patience, early_stop=settings.early_stop) if settings.refine else None)
        guided = make_pass(plan, profile_for(func_name), Recorder(model.unet), loss=settings.loss,
                           smooth=settings.smoothing, truncate=truncate, keep_maps=keep_maps, log=log)
    denoiser = CFGDenoiser(model_wrap, cond, uncond, cfg_scale, guided, rows)
    x = initial_noise(seeds, (4, height // 8, width // 8), model.device) * sigmas[0]
    kwargs = {}
    if func_name in ("sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
        kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds[0])
    hijacked, sampling.torch = sampling.torch, torch  # a WebUI in this process may have pointed it at its RNG
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seeds[0])  # ancestral samplers' noise
            latents = getattr(sampling, func_name)(denoiser, x, sigmas, disable=True,
                                                   callback=guided.end_step if guided else None, **kwargs)
    finally:
        sampling.torch = hijacked
    images = model.decode(latents) if decode and model.decoder is not None else None
    return Generation(latents, images, guided, chunks, rows)
