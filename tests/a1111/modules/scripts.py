"""Mirrors modules/scripts.py: ``Script`` (hooks, ``elem_id``, ``on_after_component``),
``AlwaysVisible``, ``PostSampleArgs``, ``MaskBlendArgs``, ``scripts_data``, and a ``ScriptRunner``
that builds always-on scripts' UIs into one ``inputs`` list (index 0 = the selectable-script
dropdown), keeps them as ``alwayson_scripts`` and calls their hooks (``on_mask_blend`` included)
with ``p.script_args[args_from:args_to]``, reporting (not raising) errors."""

import re
from collections import namedtuple

from modules import errors, script_callbacks  # noqa: F401  (extensions reach callbacks as scripts.script_callbacks)

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list = []


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class OnComponent:
    def __init__(self, component):
        self.component = component


class Script:
    name = filename = args_from = args_to = None
    alwayson = is_txt2img = is_img2img = False
    infotext_fields = paste_field_names = None
    on_after_component_elem_id = None
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabname = f"{'img2img' if self.is_img2img else 'txt2img'}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"

    # hooks with upstream's signatures; a script overrides the ones it uses
    def process(self, p, *args): pass
    def process_before_every_sampling(self, p, *args, **kwargs): pass
    def before_hr(self, p, *args): pass
    def post_sample(self, p, ps, *args): pass
    def postprocess(self, p, processed, *args): pass
    def on_mask_blend(self, p, mba, *args): pass


HOOKS = ("process", "process_before_every_sampling", "before_hr", "post_sample", "postprocess", "on_mask_blend")


class ScriptRunner:
    def __init__(self, script_classes, is_img2img=False):
        self.scripts, self.inputs = [], [None]
        for cls in script_classes:
            script = cls()
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
        self.alwayson_scripts = self.scripts
        self.infotext_fields, self.paste_field_names = [], []

    def setup_ui(self):
        """Build each script's UI (inside a gr.Blocks the caller opened)."""
        for script in self.scripts:
            script.args_from = len(self.inputs)
            controls = script.ui(script.is_img2img)
            script.controls = controls
            script.args_to = len(self.inputs)
            if controls is None:
                continue
            script.name = script.title().lower()
            self.inputs += controls
            script.args_to = len(self.inputs)
            self.infotext_fields += script.infotext_fields or []
            self.paste_field_names += script.paste_field_names or []

    def default_args(self):
        return [0] + [getattr(c, "value", None) for c in self.inputs[1:]]

    def component_created(self, elem_id, component):
        """What ``ScriptRunner.after_component`` does for ``on_after_component`` callbacks."""
        for script in self.scripts:
            for wanted, callback in script.on_after_component_elem_id or []:
                if wanted == elem_id:
                    callback(OnComponent(component))

    def _run(self, hook, p, *args, **kwargs):
        for script in self.scripts:
            if getattr(type(script), hook) is getattr(Script, hook):
                continue
            try:
                getattr(script, hook)(p, *args, *p.script_args[script.args_from:script.args_to], **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def process(self, p):
        self._run("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._run("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._run("before_hr", p)

    def post_sample(self, p, ps):
        self._run("post_sample", p, ps)

    def postprocess(self, p, processed):
        self._run("postprocess", p, processed)

    def on_mask_blend(self, p, mba):
        self._run("on_mask_blend", p, mba)
