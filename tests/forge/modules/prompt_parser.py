"""Mirrors Forge's modules/prompt_parser.py: A1111's (the A1111 stand-in's file), plus
``distilled_cfg_scale`` on SdConditioning and, on SDXL's ``DictWithShape``, ``to`` and
``advanced_indexing`` (:271-291: every tensor of the dict indexed, as ``compile_weighted_conditions``
takes an AND slot's rows)."""

import torch

from reuse import a1111

a1111("modules/prompt_parser.py", globals())


class DictWithShape(DictWithShape):  # noqa: F821 - defined by the A1111 file; the reconstructors look it up here
    def to(self, *args, **kwargs):
        for k in self.keys():
            if isinstance(self[k], torch.Tensor):
                self[k] = self[k].to(*args, **kwargs)
        return self

    def advanced_indexing(self, item):
        return DictWithShape({k: v[item] for k, v in self.items() if isinstance(v, torch.Tensor)})
