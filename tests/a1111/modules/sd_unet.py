"""Mirrors modules/sd_unet.py: the alternative UNets other extensions register (TensorRT), the
one the "SD Unet" setting chooses (``get_unet_option``: "None", "Automatic" = the one named for
the checkpoint, or a label), and ``apply_unet``, which processing calls after the scripts'
``process`` (processing.py :927) to make that choice ``current_unet``. The UNet forward hijack
that calls ``current_unet`` is not mirrored."""

import torch

from modules import shared

unet_options = []
current_unet_option = None
current_unet = None


def get_unet_option(option=None):
    option = option or shared.opts.sd_unet
    if option == "None":
        return None
    if option == "Automatic":
        name = shared.sd_model.sd_checkpoint_info.model_name
        options = [x for x in unet_options if x.model_name == name]
        option = options[0].label if options else "None"
    return next(iter([x for x in unet_options if x.label == option]), None)


def apply_unet(option=None):
    global current_unet_option, current_unet
    new_option = get_unet_option(option)
    if new_option == current_unet_option:
        return
    if current_unet is not None:
        current_unet.deactivate()
    current_unet_option = new_option
    if current_unet_option is None:
        current_unet = None
        return
    current_unet = current_unet_option.create_unet()
    current_unet.option = current_unet_option
    current_unet.activate()


class SdUnetOption:
    model_name = None
    label = None

    def create_unet(self):
        raise NotImplementedError()


class SdUnet(torch.nn.Module):
    def activate(self):
        pass

    def deactivate(self):
        pass
