"""Mirrors sd-webui-controlnet ``scripts/enums.py``: ``ControlModelType`` (the types T-SAM meets) and
its ``is_controlnet``."""

from enum import Enum


class ControlModelType(Enum):
    ControlNet = "ControlNet, Lvmin Zhang"
    T2I_Adapter = "T2I_Adapter, Chong Mou"
    AttentionInjection = "AttentionInjection, Lvmin Zhang"
    ControlLoRA = "ControlLoRA, Wu Hecong"
    IPAdapter = "IPAdapter, Hu Ye"
    InstantID = "InstantID, Qixun Wang"
    ControlNetUnion = "ControlNetUnion, xinsir6"

    @property
    def is_controlnet(self) -> bool:
        return self in (ControlModelType.ControlNet, ControlModelType.ControlLoRA, ControlModelType.InstantID,
                        ControlModelType.ControlNetUnion)
