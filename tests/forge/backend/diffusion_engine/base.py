"""Mirrors backend/diffusion_engine/base.py: ``ForgeObjects`` (unet, clip, vae, clipvision;
``shallow_copy``) and ``ForgeDiffusionEngine``'s WebUI-legacy flags (all False until a family
sets its own) and empty ``cond_stage_model``."""


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    def __init__(self):
        self.forge_objects = self.forge_objects_original = self.forge_objects_after_applying_lora = None
        self.current_lora_hash = str([])
        self.cond_stage_model = self.first_stage_model = None
        self.use_distilled_cfg_scale = False
        self.is_sd1 = self.is_sd2 = self.is_sdxl = self.is_sd3 = False
