"""Mirrors modules/processing.py: ``StableDiffusionProcessingTxt2Img`` (with hires fix) /
``...Img2Img``, ``process_images`` (hook order, ``torch.no_grad``, persistent cond cache shared
by all jobs, per-batch conds), ``create_infotext`` and ``Processed``. The stand-in has no VAE:
``decode`` maps a latent to a PIL image by a fixed projection, ``Processed.latents`` keeps the
final latents for tests, and img2img takes ``init_latent`` directly and, for inpainting, the mask
at latent size (``latent_mask`` [h, w], 1 = repaint) that ``init`` turns into ``mask`` / ``nmask``
as the real one does from the mask image ("original" fill), blended back after sampling."""

import re

import numpy as np
import torch
from PIL import Image

from modules import devices, infotext_utils, prompt_parser, rng, scripts, sd_hijack, sd_samplers, sd_unet, shared
from modules.shared import opts, state

opt_C, opt_f = 4, 8


class StableDiffusionProcessing:
    cached_c = [None, None]   # class attributes: the cond cache persists across jobs
    cached_uc = [None, None]
    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]

    def __init__(self, prompt="", negative_prompt="", seed=-1, sampler_name="Euler a", scheduler=None, batch_size=1,
                 n_iter=1, steps=20, cfg_scale=7.0, width=512, height=512, eta=None, denoising_strength=0.0,
                 script_args=None, scripts_runner=None, do_not_save_samples=True, override_settings=None,
                 refiner_checkpoint_info=None, refiner_switch_at=None):
        self.prompt, self.negative_prompt, self.seed = prompt, negative_prompt, seed
        self.refiner_checkpoint_info, self.refiner_switch_at = refiner_checkpoint_info, refiner_switch_at
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.batch_size, self.n_iter, self.steps, self.cfg_scale = batch_size, n_iter, steps, cfg_scale
        self.width, self.height, self.eta, self.denoising_strength = width, height, eta, denoising_strength
        self.scripts, self.script_args = scripts_runner, list(script_args or [])
        self.extra_generation_params = {}
        self.comments = {}
        self.disable_extra_networks = False
        self.is_hr_pass = False
        self.sampler = None
        self.iteration = 0
        self.s_min_uncond = 0.0
        self.hr_scheduler = None
        self.outpath_samples = "outputs/txt2img-images"

    @property
    def sd_model(self):
        return shared.sd_model

    def comment(self, text):
        self.comments[text] = 1

    def cached_params(self, prompts, steps, hires_steps=None):
        return (tuple(prompts), steps, hires_steps, opts.use_old_scheduling, opts.CLIP_stop_at_last_layers,
                shared.sd_model.sd_checkpoint_info, self.width, self.height, opts.emphasis)

    def get_conds_with_caching(self, function, required_prompts, steps, caches, hires_steps=None):
        params = self.cached_params(required_prompts, steps, hires_steps)
        for cache in caches:
            if cache[0] is not None and cache[0] == params:
                return cache[1]
        cache = caches[0]
        with devices.autocast():
            cache[1] = function(shared.sd_model, required_prompts, steps, hires_steps, opts.use_old_scheduling)
        cache[0] = params
        return cache[1]

    def setup_conds(self):
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negative = prompt_parser.SdConditioning(self.negative_prompts, width=self.width, height=self.height, is_negative_prompt=True)
        config = sd_samplers.find_sampler_config(self.sampler_name)
        total_steps = config.total_steps(self.steps) if config else self.steps
        self.step_multiplier = total_steps // self.steps
        self.firstpass_steps = total_steps
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, total_steps, [self.cached_uc])
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts, total_steps, [self.cached_c])

    def get_conds(self):
        return self.c, self.uc

    def txt2img_image_conditioning(self, x):
        return x.new_zeros(x.shape[0], 5, 1, 1, dtype=x.dtype, device=x.device)

    def parse_extra_network_prompts(self):
        self.prompts = [re.sub(r"<\w+:[^>]+>", "", p) for p in self.prompts]

    def close(self):
        pass


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, hr_second_pass_steps=0, hr_sampler_name=None, hr_prompt="",
                 denoising_strength=0.7, **kwargs):
        super().__init__(denoising_strength=denoising_strength, **kwargs)
        self.enable_hr, self.hr_scale, self.hr_second_pass_steps = enable_hr, hr_scale, hr_second_pass_steps
        self.hr_sampler_name, self.hr_prompt = hr_sampler_name, hr_prompt
        self.hr_c = self.hr_uc = None

    def init(self, all_prompts, all_seeds, all_subseeds):
        self.all_hr_prompts = [self.hr_prompt or p for p in all_prompts]
        self.hr_upscale_to_x, self.hr_upscale_to_y = int(self.width * self.hr_scale), int(self.height * self.hr_scale)

    def calculate_hr_conds(self):
        if self.hr_c is not None:
            return
        prompts = prompt_parser.SdConditioning(self.hr_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y)
        negative = prompt_parser.SdConditioning(self.hr_negative_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y, is_negative_prompt=True)
        config = sd_samplers.find_sampler_config(self.hr_sampler_name or self.sampler_name)
        steps = self.hr_second_pass_steps or self.steps
        total_steps = config.total_steps(steps) if config else steps
        self.hr_uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, self.firstpass_steps,
                                                 [self.cached_hr_uc, self.cached_uc], total_steps)
        self.hr_c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, prompts, self.firstpass_steps,
                                                [self.cached_hr_c, self.cached_c], total_steps)

    def setup_conds(self):
        if self.is_hr_pass:  # called by the refiner switch during the hires pass
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_c = self.hr_uc = None

    def get_conds(self):
        if self.is_hr_pass:
            return self.hr_c, self.hr_uc
        return super().get_conds()

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        self.scripts.process_before_every_sampling(p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=self.txt2img_image_conditioning(x))
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        samples = torch.nn.functional.interpolate(samples, size=(self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f), mode="nearest")
        self.rng = rng.ImageRNG(samples.shape[1:], self.seeds)
        noise = self.rng.next()
        self.calculate_hr_conds()
        self.scripts.before_hr(self)
        self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc, steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=self.txt2img_image_conditioning(samples))
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_latent=None, denoising_strength=0.75, latent_mask=None, **kwargs):
        super().__init__(denoising_strength=denoising_strength, **kwargs)
        self.init_latent = init_latent
        self.latent_mask = latent_mask
        self.image_conditioning = None
        self.mask = self.nmask = None

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.latent_mask is not None:
            latmask = torch.as_tensor(self.latent_mask, dtype=torch.float32).round()
            latmask = latmask[None].repeat(opt_C, 1, 1)
            self.mask = (1.0 - latmask).to(shared.device).type(devices.dtype)
            self.nmask = latmask.to(shared.device).type(devices.dtype)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        init = self.init_latent.expand(x.shape[0], -1, -1, -1)
        self.scripts.process_before_every_sampling(p=self, x=init, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, init, x, conditioning, unconditional_conditioning,
                                              image_conditioning=self.txt2img_image_conditioning(x))
        if self.mask is not None:
            blended_samples = samples * self.nmask + init * self.mask
            if self.scripts is not None:
                mba = scripts.MaskBlendArgs(samples, self.nmask, init, self.mask, blended_samples)
                self.scripts.on_mask_blend(self, mba)
                blended_samples = mba.blended_latent
            samples = blended_samples
        return samples


class Processed:
    def __init__(self, p, images, infotexts, latents=None):
        self.images, self.infotexts, self.latents = images, infotexts, latents
        self.prompt, self.seed, self.comments = p.prompt, p.seed, "".join(f"{c}\n" for c in p.comments)
        self.index_of_first_image = 0


def decode(latent: torch.Tensor) -> Image.Image:
    """Stand-in VAE: the first three latent channels, squashed to 0..255, upscaled 8x."""
    rgb = ((latent[:3].float().tanh() + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(rgb)).resize((latent.shape[2] * 8, latent.shape[1] * 8), Image.NEAREST)


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    generation_params = {
        "Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale, "Seed": all_seeds[index],
        "Size": f"{p.width}x{p.height}", **p.extra_generation_params,
    }
    for key, value in generation_params.items():
        if isinstance(value, list):
            generation_params[key] = value[index]
        elif callable(value):
            generation_params[key] = value(**locals())
    text = ", ".join(k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in generation_params.items() if v is not None)
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    return f"{all_prompts[index]}{negative}\n{text}".strip()


def process_images(p) -> Processed:
    state.reset()
    p.all_prompts = (p.prompt if isinstance(p.prompt, list) else [p.prompt] * (p.batch_size * p.n_iter))
    p.all_negative_prompts = [p.negative_prompt] * len(p.all_prompts)
    p.all_seeds = [int(p.seed) + i for i in range(len(p.all_prompts))]
    p.all_subseeds = list(p.all_seeds)
    p.scripts.process(p)
    images, infotexts, latents = [], [], []
    with torch.no_grad():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        sd_unet.apply_unet()
        for n in range(p.n_iter):
            p.iteration = n
            if state.skipped:
                state.skipped = False
            if state.interrupted:
                break
            sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            if hasattr(p, "all_hr_prompts"):
                p.hr_prompts, p.hr_negative_prompts = p.all_hr_prompts[sl], p.negative_prompts
            p.rng = rng.ImageRNG((opt_C, p.height // opt_f, p.width // opt_f), p.seeds)
            p.parse_extra_network_prompts()
            if hasattr(p, "hr_prompts"):
                p.hr_prompts = [re.sub(r"<\w+:[^>]+>", "", x) for x in p.hr_prompts]
            p.setup_conds()
            p.extra_generation_params.update(sd_hijack.model_hijack.extra_generation_params)
            with devices.autocast():
                samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.seeds,
                                   subseed_strength=0, prompts=p.prompts)
            ps = scripts.PostSampleArgs(samples)
            p.scripts.post_sample(p, ps)
            samples = ps.samples
            devices.test_for_nans(samples, "unet")
            for i, sample in enumerate(samples):
                latents.append(sample)
                images.append(decode(sample))
                infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n, position_in_batch=i))
            state.nextjob()
    res = Processed(p, images, infotexts, latents)
    p.scripts.postprocess(p, res)
    return res
