"""Standalone txt2img for every family of ``models`` (SD 1.x, SD 2.x eps and v, SDXL) through
k-diffusion's real samplers, with or without T-SAM.

The explicit steps of a generation (as diffusers' pipelines lay them out): tokenize and encode,
text targets, noise, sampler with a CFG denoiser that lets T-SAM move the latent on guided
steps, decode. A family's conditioning is a tensor [B, 77k, D] or, for SDXL, a dict of them
(``crossattn`` [B, 77k, D], ``vector`` [B, V]); the helpers below treat both alike. Used by
``python -m tsam_ext``, the benchmark, the evaluation and the tests.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.controller import GuidedPass
from ..core.diagnostics import token_labels
from ..core.guidance import CHUNK, ChunkTarget, RowTarget
from ..core.memory_plan import unet_estimate
from ..core.recorder import Recorder
from ..core.samplers import profile_for, step_count
from ..core.schedule import Refinement, make_plan
from ..core.settings import Settings
from ..core.text_maps import text_target
from ..core.zspace import unet_input_scale, unet_timestep
from ..families.encoders import chosen
from . import kdiffusion
from .model import Diffusion, PromptChunk

SAMPLERS = {  # A1111 label -> (k-diffusion function, schedule)
    "Euler a": ("sample_euler_ancestral", "default"), "Euler": ("sample_euler", "default"),
    "LMS": ("sample_lms", "default"), "Heun": ("sample_heun", "default"),
    "DPM2": ("sample_dpm_2", "karras"), "DPM2 a": ("sample_dpm_2_ancestral", "karras"),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras"), "DPM++ 2M": ("sample_dpmpp_2m", "karras"),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras"), "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential"),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "exponential"),
}


def text_rows(model: Diffusion, prompts: list[str], gamma: float, order: str,
              text_encoder: str = "both") -> tuple[list[RowTarget], list[list[PromptChunk]]]:
    """One row per prompt, each chunk with its T (row i belongs to image i); ``text_encoder``
    picks the encoders of a two-encoder model (``families.encoders.chosen``)."""
    names = chosen(model.text_encoders, text_encoder)
    rows, all_chunks = [], []
    for i, prompt in enumerate(prompts):
        chunks = model.chunks(prompt)
        att = model.self_attention(chunks)
        rows.append(RowTarget(i, tuple(ChunkTarget(text_target([att[name][k] for name in names], c.n, gamma, order),
                                                   CHUNK * k, token_labels(model.tokenizer, c.ids[1:c.n + 1]))
                                       for k, c in enumerate(chunks))))
        all_chunks.append(chunks)
    return rows, all_chunks


def map_cond(cond, fn):
    """``fn`` applied to a cond tensor, or to each tensor of SDXL's dict."""
    return {k: fn(v) for k, v in cond.items()} if isinstance(cond, dict) else fn(cond)


def cat_conds(conds: list):
    """Conds of several batches concatenated on the batch axis."""
    if isinstance(conds[0], dict):
        return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}
    return torch.cat(conds)


def token_length(cond) -> int:
    return (cond["crossattn"] if isinstance(cond, dict) else cond).shape[1]


def stack_conds(conds: list):
    """[B, 77k, D] (or SDXL's dict) from per-prompt conds [1, 77k_i, D], shorter ones padded with
    their last vector (as A1111)."""
    if isinstance(conds[0], dict):
        return {"crossattn": stack_conds([c["crossattn"] for c in conds]), "vector": torch.cat([c["vector"] for c in conds])}
    length = max(c.shape[1] for c in conds)
    return torch.cat([torch.cat([c, c[:, -1:].expand(1, length - c.shape[1], -1)], dim=1) for c in conds])


class CFGDenoiser(nn.Module):
    """Classifier-free guidance over k-diffusion's CompVis wrapper; T-SAM moves x first on guided steps."""

    def __init__(self, model_wrap: nn.Module, cond, uncond, scale: float,
                 guided: GuidedPass | None = None, rows: list[RowTarget] | None = None):
        super().__init__()
        self.model_wrap, self.cond, self.uncond, self.scale = model_wrap, cond, uncond, scale
        self.guided, self.rows = guided, rows

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.guided is not None:
            step = self.guided.begin_call()
            if step is not None:
                t = unet_timestep(self.model_wrap, sigma)

                def run(z, ids):
                    cond = map_cond(self.cond, lambda v: v[ids])
                    return self.model_wrap.inner_model.apply_model(z, t[[self.rows[i].image for i in ids]], cond)

                self.guided.guide(x, step, self.rows, run, unet_input_scale(self.model_wrap, sigma))
        if token_length(self.cond) == token_length(self.uncond):
            out = self.model_wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cat_conds([self.cond, self.uncond]))
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


def generate(model: Diffusion, prompts: list[str], seeds: list[int], settings: Settings | None = None, *,
             negative: str = "", steps: int = 20, cfg_scale: float = 7.5, width: int = 512, height: int = 512,
             sampler: str = "DPM++ 2M", decode: bool = True, keep_maps: bool = False, truncate: bool = True,
             refinement: Refinement = Refinement(), log=print, make_pass=GuidedPass, progress: bool = False) -> Generation:
    """Generate one image per prompt (``seeds[i]`` for prompt i); T-SAM runs when ``settings.enabled``.

    ``make_pass`` builds the per-pass guidance state (``GuidedPass`` or a subclass with another
    ``guide``, as the benchmark's reference-strategy baseline); ``progress`` shows the sampler's
    progress bar."""
    sampling, external = kdiffusion.load()
    func_name, schedule = SAMPLERS[sampler]
    wrapper = external.CompVisVDenoiser if model.parameterization == "v" else external.CompVisDenoiser
    model_wrap = wrapper(model)
    sigma_min, sigma_max = float(model_wrap.sigmas[0]), float(model_wrap.sigmas[-1])
    sigmas = {"default": lambda: model_wrap.get_sigmas(steps),
              "karras": lambda: sampling.get_sigmas_karras(steps, sigma_min, sigma_max),
              "exponential": lambda: sampling.get_sigmas_exponential(steps, sigma_min, sigma_max)}[schedule]().to(model.device)

    size = (height, width)
    chunks = [model.chunks(p) for p in prompts]
    cond = stack_conds([model.conditioning(c, size) for c in chunks])
    uncond = map_cond(model.conditioning(model.chunks(negative), size, negative=True),
                      lambda v: v.expand(len(prompts), *v.shape[1:]))
    guided, rows = None, []
    if settings is not None and settings.enabled:
        rows, _ = text_rows(model, prompts, settings.gamma, settings.target_order, settings.text_encoder)
        plan = make_plan(step_count(func_name, {"sigmas": sigmas}, steps), settings.alpha, settings.guided_fraction,
                         Refinement(settings.refine_iterations, refinement.extra, refinement.tolerance,
                                    refinement.patience, early_stop=settings.early_stop) if settings.refine else None)
        recorder = Recorder(model.unet)
        guided = make_pass(plan, profile_for(func_name), recorder, loss=settings.loss,
                           length=settings.length_scaling, smooth=settings.smoothing, truncate=truncate, keep_maps=keep_maps, log=log,
                           estimate=unet_estimate(recorder, cond, loss=settings.loss,
                                                  smooth=settings.smoothing, truncate=truncate,
                                                  length=settings.length_scaling))
    denoiser = CFGDenoiser(model_wrap, cond, uncond, cfg_scale, guided, rows)
    x = initial_noise(seeds, (4, height // 8, width // 8), model.device) * sigmas[0]
    kwargs = {}
    if func_name in ("sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"):
        kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds[0])
    hijacked, sampling.torch = sampling.torch, torch  # a WebUI in this process may have pointed it at its RNG
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seeds[0])  # ancestral samplers' noise
            latents = getattr(sampling, func_name)(denoiser, x, sigmas, disable=not progress,
                                                   callback=guided.end_step if guided else None, **kwargs)
    finally:
        sampling.torch = hijacked
    images = model.decode(latents) if decode and model.decoder is not None else None
    return Generation(latents, images, guided, chunks, rows)
