"""Mirrors Forge's modules/processing.py, on the A1111 stand-in's classes (tests/a1111/modules/
processing.py: conds, cond cache, infotext, ``Processed``, the stand-in VAE), with what Forge
changed around sampling:

- ``process_images`` loads the model with ``forge_model_reload`` (again each batch), and runs
  everything from ``p.init`` to the last decode inside ``torch.inference_mode`` (:911);
- each batch starts from ``forge_objects_original``, activates extra networks (LoRA) from the
  tags ``parse_extra_network_prompts`` took out of the prompts, and continues from
  ``forge_objects_after_applying_lora`` (:955-957);
- right before ``process_before_every_sampling`` the model's ``forge_objects`` are reset to a
  shallow copy of the after-LoRA set (txt2img :1373, img2img :1851), so what a script patched
  there lives for that sampling pass only;
- hires fix calls ``process_before_every_sampling`` twice for the same hires sampler, before and
  after that reset (:1510, :1522), and samples with ``p.hr_cfg`` (the API's default: 1.0)."""

import torch

from modules import extra_networks, rng, scripts, sd_models, sd_samplers
from modules.shared import state
from reuse import a1111

a1111("modules/processing.py", globals())

_Txt2Img, _Img2Img = StableDiffusionProcessingTxt2Img, StableDiffusionProcessingImg2Img  # noqa: F821


def _reset_forge_objects(p):
    p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()


class StableDiffusionProcessingTxt2Img(_Txt2Img):
    def __init__(self, hr_cfg=1.0, **kwargs):
        super().__init__(**kwargs)
        self.hr_cfg = hr_cfg

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        _reset_forge_objects(self)
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
        samples = torch.nn.functional.interpolate(samples, size=(self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f), mode="nearest")  # noqa: F821
        self.rng = rng.ImageRNG(samples.shape[1:], self.seeds)
        noise = self.rng.next()
        self.calculate_hr_conds()
        self.scripts.before_hr(self)
        self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        _reset_forge_objects(self)
        self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc, steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=self.txt2img_image_conditioning(samples))
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(_Img2Img):
    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        init = self.init_latent.expand(x.shape[0], -1, -1, -1)
        _reset_forge_objects(self)
        self.scripts.process_before_every_sampling(p=self, x=init, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, init, x, conditioning, unconditional_conditioning,
                                              image_conditioning=self.txt2img_image_conditioning(x))
        if self.mask is not None:  # :1870, as A1111
            blended_samples = samples * self.nmask + init * self.mask
            if self.scripts is not None:
                mba = scripts.MaskBlendArgs(samples, self.nmask, init, self.mask, blended_samples)
                self.scripts.on_mask_blend(self, mba)
                blended_samples = mba.blended_latent
            samples = blended_samples
        return samples


def process_images(p) -> Processed:  # noqa: F821
    state.reset()
    sd_models.forge_model_reload()
    p.all_prompts = p.prompt if isinstance(p.prompt, list) else [p.prompt] * (p.batch_size * p.n_iter)
    p.all_negative_prompts = [p.negative_prompt] * len(p.all_prompts)
    p.all_seeds = [int(p.seed) + i for i in range(len(p.all_prompts))]
    p.all_subseeds = list(p.all_seeds)
    p.scripts.process(p)
    images, infotexts, latents = [], [], []
    with torch.inference_mode():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        for n in range(p.n_iter):
            p.iteration = n
            if state.interrupted:
                break
            sd_models.forge_model_reload()
            model = p.sd_model
            model.forge_objects = model.forge_objects_original.shallow_copy()
            sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            if hasattr(p, "all_hr_prompts"):
                p.hr_prompts, p.hr_negative_prompts = p.all_hr_prompts[sl], p.negative_prompts
            p.rng = rng.ImageRNG((opt_C, p.height // opt_f, p.width // opt_f), p.seeds)  # noqa: F821
            p.parse_extra_network_prompts()
            if hasattr(p, "hr_prompts"):
                p.hr_prompts = extra_networks.parse_prompts(p.hr_prompts)[0]
            extra_networks.activate(p, p.extra_network_data)
            model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
            p.setup_conds()
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.seeds,
                               subseed_strength=0, prompts=p.prompts)
            ps = scripts.PostSampleArgs(samples)
            p.scripts.post_sample(p, ps)
            for i, sample in enumerate(ps.samples):
                latents.append(sample)
                images.append(decode(sample))  # noqa: F821
                infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n, position_in_batch=i))  # noqa: F821
            state.nextjob()
    res = Processed(p, images, infotexts, latents)  # noqa: F821
    p.scripts.postprocess(p, res)
    return res
