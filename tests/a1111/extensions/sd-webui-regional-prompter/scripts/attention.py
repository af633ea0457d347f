"""Mirrors hako-mikan/sd-webui-regional-prompter (be62345) ``scripts/attention.py`` as far as the
UNet goes: ``hook_forwards`` replaces the ``forward`` of every ``attn2`` CrossAttention by
``hook_forward``'s (:112-127), which counts its calls and flips the cond/uncond state ``pn`` every
16 calls (70 on SDXL), i.e. once per full UNet pass, across passes (:475-481). The regional
attention itself (``matsepcalc`` / ``masksepcalc`` / ``promptsepcalc``: the text split by region,
each region's output masked) is the layer's own attention here."""


def hook_forwards(self, p, remove=False):
    self.need_hook = not remove
    hook_forwards_x(self, p.sd_model.model.diffusion_model, remove)


def hook_forwards_x(self, root_module, remove=False):
    self.hooked = not remove
    for name, module in root_module.named_modules():
        if "attn2" in name and module.__class__.__name__ == "CrossAttention":
            module.forward = hook_forward(self, module)
            if remove:
                del module.forward


def hook_forward(self, module):
    def forward(x, context=None, mask=None, additional_tokens=None, n_times_crossframe_attn_in_self=0, value=None, transformer_options=None):
        ox = type(module).forward(module, x, context=context)
        self.count += 1
        limit = 70 if self.is_sdxl else 16
        if self.count == limit:
            self.pn = not self.pn
            self.count = 0
            self.condi += 1
        return ox

    return forward
