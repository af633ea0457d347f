"""T-SAM for the AUTOMATIC1111 WebUI: the Script the WebUI loads. Everything it does is in
``tsam_ext.host`` (the WebUI adapter) over ``tsam_ext``'s host-free core."""

from modules import script_callbacks, scripts

from tsam_ext.host import job, options, ui, xyz


class Script(scripts.Script):
    def __init__(self):
        self.links = ui.Links()
        self.watching = False

    def title(self):
        return "T-SAM"

    def show(self, is_img2img):
        if not self.watching:  # show() runs again for every elem_id(): register once
            self.watching = True
            self.links.watch(self, is_img2img)
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return ui.build(self, is_img2img)

    def process(self, p, *args):
        job.start(p, *args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        job.before_sampling(p)

    def postprocess(self, p, processed, *args):
        job.finish(p, processed)


script_callbacks.on_ui_settings(options.register)
script_callbacks.on_before_ui(xyz.register)
