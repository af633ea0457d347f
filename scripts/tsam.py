"""T-SAM for the AUTOMATIC1111 WebUI: the Script the WebUI loads. Everything it does is in
``tsam_ext.host`` (the WebUI adapter) over ``tsam_ext``'s host-free core."""

from modules import script_callbacks, scripts

from tsam_ext.host import job, options, ui, xyz


class Script(scripts.Script):
    tsam_steps = None   # the tab's "Sampling steps" slider, once the WebUI has built it
    tsam_hint = None    # (hint, guided steps, refine) of the first ui() call: the page's own
    tsam_wired = False
    tsam_watching = False

    def title(self):
        return "T-SAM"

    def show(self, is_img2img):
        if not self.tsam_watching:  # show() runs again for every elem_id(): register once
            self.tsam_watching = True
            self.on_after_component(self._found_steps, elem_id=f"{'img2img' if is_img2img else 'txt2img'}_steps")
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return ui.build(self, is_img2img)

    def _found_steps(self, on_component):
        self.tsam_steps = on_component.component
        self.wire_steps_hint()

    def wire_steps_hint(self):
        """Once: the API calls ui() again for every request, inside a throwaway gr.Blocks."""
        if self.tsam_steps is not None and self.tsam_hint is not None and not self.tsam_wired:
            self.tsam_wired = True
            ui.wire_steps_hint(self.tsam_steps, *self.tsam_hint)

    def process(self, p, *args):
        job.start(p, *args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        job.before_sampling(p)

    def postprocess(self, p, processed, *args):
        job.finish(p, processed)


script_callbacks.on_ui_settings(options.register)
script_callbacks.on_before_ui(xyz.register)
