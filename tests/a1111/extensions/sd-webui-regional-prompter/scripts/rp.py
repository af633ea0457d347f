"""Mirrors hako-mikan/sd-webui-regional-prompter (be62345) ``scripts/rp.py`` ``Script``: title
"Regional Prompter", always visible; ``process`` re-initialises the script with ``active`` and
the generation mode ``calc`` ("Attention" / "Latent") and, when active in Attention mode, hooks
the UNet's attn2 layers (:543, :588-598); ``postprocess`` unhooks them (:713). Its settings come
from ``p.regional_prompter`` (``{"active": bool, "calc": str}``; the real script reads its UI /
API args)."""

from modules import scripts

from .attention import hook_forwards


class Script(scripts.Script):
    def __init__(self, active=False, calc="Attention", is_sdxl=False):
        self.active, self.calc, self.is_sdxl = active, calc, is_sdxl
        self.count, self.pn, self.condi = 0, True, 0
        self.need_hook = self.hooked = False

    def title(self):
        return "Regional Prompter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        settings = getattr(p, "regional_prompter", {})
        self.__init__(settings.get("active", False), settings.get("calc", "Attention"), bool(getattr(p.sd_model, "is_sdxl", False)))
        if self.active and "Att" in self.calc:
            hook_forwards(self, p)
        elif self.hooked:
            hook_forwards(self, p, remove=True)

    def postprocess(self, p, processed, *args):
        if self.hooked:
            hook_forwards(self, p, remove=True)
