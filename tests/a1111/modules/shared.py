"""Mirrors modules/shared.py (+ shared_state.State, options.Options, OptionInfo): the globals
the adapter reads: ``opts``, ``state``, ``cmd_opts``, ``sd_model``."""

import types


class OptionInfo:
    """Mirrors modules/options.py OptionInfo (the fields the Settings tab uses)."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section, self.onchange = section, onchange
        self.reload_ui = False

    def info(self, text):
        return self

    def needs_reload_ui(self):
        self.reload_ui = True
        return self


class Options:
    """Mirrors modules/options.py Options: attribute access to ``data`` with registered defaults."""

    def __init__(self, defaults: dict):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {k: OptionInfo(v) for k, v in defaults.items()})

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value

    def get_default(self, key):
        return self.data_labels[key].default


class State:
    """Mirrors modules/shared_state.py State (the flags sampling reads)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.interrupted = self.skipped = self.stopping_generation = False
        self.sampling_step = self.sampling_steps = 0
        self.job_count = self.job_no = 0

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0


opts = Options({
    "sd_unet": "Automatic",
    "emphasis": "Original", "comma_padding_backtrack": 20, "CLIP_stop_at_last_layers": 1, "use_old_scheduling": False,
    "batch_cond_uncond": True, "skip_early_cond": 0.0, "s_min_uncond_all": False, "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False, "live_preview_content": "Prompt", "enable_quantization": False,
    "persistent_cond_cache": True, "eta_ddim": 0.0, "eta_ancestral": 1.0, "s_churn": 0.0, "s_tmin": 0.0,
    "s_tmax": 0.0, "s_noise": 1.0, "always_discard_next_to_last_sigma": False, "sgm_noise_multiplier": False,
    "use_old_karras_scheduler_sigmas": False, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0, "beta_dist_alpha": 0.6, "beta_dist_beta": 0.6,
    "img2img_extra_noise": 0.0, "img2img_fix_steps": False, "uni_pc_variant": "bh1", "uni_pc_skip_type": "time_uniform",
    "uni_pc_order": 3, "uni_pc_lower_order_final": True, "samples_format": "png", "textual_inversion_add_hashes_to_infotext": False, "hires_fix_use_firstpass_conds": False,
    "send_seed": True,
    "sdxl_clip_l_skip": False, "sdxl_crop_top": 0, "sdxl_crop_left": 0, "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0, "use_old_emphasis_implementation": False,
    "refiner_switch_by_sample_steps": False, "hires_fix_refiner_pass": "second pass",
})
state = State()
cmd_opts = types.SimpleNamespace(lowvram=False, medvram=False, medvram_sdxl=False, no_half=True, disable_nan_check=False)
sd_model = None
loaded_hypernetworks = []  # hypernetwork.Hypernetwork objects, as load_hypernetworks fills it
device = None
total_tqdm = types.SimpleNamespace(update=lambda *a, **k: None)
