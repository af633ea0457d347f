"""Peak memory of a guidance pass, known before it runs.

The pass is the real one (the UNet's own forward to the last latent/4 layer, the recorder, the
backward to the latent) run on fake tensors: torch's ``FakeTensorMode`` gives every tensor its
shape, dtype and device and computes nothing. ``PeakBytes`` counts each storage an operator
creates from its creation until it is freed (views and in-place results create none), as torch's
``torch.distributed._tools.mem_tracker.MemTracker`` does. That tracker is not used: it is torch
>= 2.5 only (the hosts ship 2.1.2 in A1111 1.10.1, 2.3.1 in Forge), and it hooks the gradient of
every parameter, which a guidance pass has frozen ("cannot register a hook on a tensor that
doesn't require gradient", torch 2.13). The tests check the count against the CPU allocator.

What is counted is what the pass allocates on top of what is already there (weights, latent,
conditioning): the peak the device must have free. Kernel workspaces are not tensors and are not
counted: on this CPU, oneDNN's copies of the largest convolutions' weights (up to about twice a
1280x1280x3x3 weight during some calls) put the measured peak up to 20% above the count
(bench/memory_table.py validate); cuDNN's on CUDA are not known without a card.

A module is traced on a structural copy (``fake_copy``): the same classes, the same forwards
and class-level patches (the host's attention kernel), every tensor replaced by a fake one, so
no weight is copied and nothing of the real module (its tensors, its attributes, other
extensions' state on it) is touched. Hooks and instance-level forwards (other extensions', which
may close over their own state) are dropped from the copy, which runs its class's forward; but
an attention layer keeps a forward bound to itself (a host's kernel, as the runtime's SDPA).
"""

import copy
import types
import weakref
from typing import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .fused_attention import is_attention

class PeakBytes(TorchDispatchMode):
    """While in scope: ``live`` bytes of the storages operators created and not yet freed, and
    their ``peak``."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _freed(self, nbytes: int) -> None:
        self.live -= nbytes

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[storage] = nbytes
        self.live += nbytes
        weakref.finalize(storage, self._freed, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for i, value in enumerate(outs):
            if i < len(returns) and returns[i].alias_info is not None:  # a view or an in-place result
                continue
            for t in tree_flatten(value)[0]:
                if isinstance(t, torch.Tensor):
                    self._count(t)
        self.peak = max(self.peak, self.live)
        return out


def fake_mode(module: torch.nn.Module | None = None) -> FakeTensorMode:
    """The mode a trace of ``module`` runs in: the one its tensors are fake in, if they are
    (a model built in a fake mode, as the benchmark's real-size ones), else a new one; real
    tensors (a host's constants) may enter it."""
    first = next(iter(module.parameters()), None) if module is not None else None
    if isinstance(first, FakeTensor):
        return first.fake_mode
    return FakeTensorMode(allow_non_fake_inputs=True)


def _tensors(module: torch.nn.Module):
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, torch.Tensor))


def fake_copy(module: torch.nn.Module, mode: FakeTensorMode) -> torch.nn.Module:
    """``module``'s structure with every tensor fake (see the module docstring)."""
    memo = {id(t): t if isinstance(t, FakeTensor) else mode.from_tensor(t) for t in _tensors(module)}
    for t in _tensors(module):  # a Parameter stays one, so the copy's parameters() are fake too
        if isinstance(t, torch.nn.Parameter) and not isinstance(t, FakeTensor):
            memo[id(t)] = torch.nn.Parameter(memo[id(t)], requires_grad=t.requires_grad)
    twin = copy.deepcopy(module, memo)
    for m in twin.modules():
        own = vars(m).get("forward")
        if not (is_attention(m) and isinstance(own, types.MethodType) and own.__self__ is m):
            vars(m).pop("forward", None)
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()
    return twin


def traced_peak(run: Callable[[], object]) -> int:
    """Peak bytes ``run()`` allocates, run inside ``PeakBytes`` (call it inside a fake mode)."""
    tracker = PeakBytes()
    with tracker:
        run()
    return tracker.peak
