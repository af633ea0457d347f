"""Mirrors backend/memory_management.py's model loading (Forge dfdcbab6): ``LoadedModel`` (:443:
``model_load`` patches the model onto its load device and ends with ``refresh_loras()``, :518;
``model_unload`` back to its offload device), ``unload_model_clones`` (:552), ``free_memory``
(:562: models abandoned by every patcher go first; then, newest first, every loaded model of the
device not kept, until enough is free, or all of them under --always-offload-from-vram),
``load_models_gpu`` (:614: the already loaded models of the list are kept; room for the others is
freed on their device, never on the CPU; a model that does not fit is loaded in low-VRAM mode),
the devices of UNets and text encoders (:723-801) and ``get_free_memory`` (:1008).

The command line sets ``vram_state`` and ``ALWAYS_VRAM_OFFLOAD`` (:240-251). By default this is
Forge on a CPU (--always-cpu, ``VRAMState.DISABLED``): every device is the CPU and nothing moves.
``emulate_gpu`` makes it a machine with a GPU, whose moves this one-device machine emulates: the
GPU is ``torch.device("cpu", 0)`` (it computes on the CPU, and the memory manager's "not the CPU"
checks hold for it), and a module moved to the CPU keeps its tensors aside and holds meta tensors
of the same shapes instead, so computing with a model that is not loaded fails ("Tensor on device
meta is not on the expected device cpu!") where a GPU machine fails on a device mismatch. Its
VRAM is the ``vram`` bytes given less the parameters of the models loaded on it. The low-VRAM
mode's partial loading (per-layer copies cast on the fly, :477-511) is emulated as a full load:
those layers compute on the GPU either way."""

import sys
from enum import Enum

import torch


class VRAMState(Enum):
    DISABLED = 0  # no GPU: --always-cpu
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4  # --always-gpu
    SHARED = 5


CPU = torch.device("cpu")
GPU = torch.device("cpu", 0)  # the emulated GPU (see above)

vram_state = VRAMState.DISABLED
ALWAYS_VRAM_OFFLOAD = False
total_vram = 0
current_inference_memory = 1024 * 1024 * 1024  # :545
current_loaded_models = []
signal_empty_cache = False
OFFLOADED = "_emulated_offload"  # a module's tensors while it is "on the CPU"


def emulate_gpu(vram: int, state: VRAMState = VRAMState.NORMAL_VRAM, always_offload: bool = False) -> None:
    """Run as Forge on a GPU of ``vram`` bytes in ``state``, with --always-offload-from-vram or not;
    models built from now on start on their offload device. ``emulate_gpu(0, VRAMState.DISABLED)``
    is the CPU machine again."""
    global vram_state, ALWAYS_VRAM_OFFLOAD, total_vram
    vram_state, ALWAYS_VRAM_OFFLOAD, total_vram = state, always_offload, vram
    current_loaded_models.clear()


def module_to(module: torch.nn.Module, device) -> torch.nn.Module:
    """``module.to(device)`` on the emulated machine: to the CPU the tensors go aside (meta in
    their place), to the GPU they come back."""
    if device is None or vram_state is VRAMState.DISABLED:
        return module if device is None else module.to(device)
    offload = device == CPU
    for m in module.modules():
        kept = m.__dict__.setdefault(OFFLOADED, {})
        for store in (m._parameters, m._buffers):
            for name, t in list(store.items()):
                if offload and t is not None and name not in kept:
                    kept[name] = t
                    meta = torch.empty_like(t, device="meta")
                    store[name] = torch.nn.Parameter(meta, t.requires_grad) if isinstance(t, torch.nn.Parameter) else meta
                elif not offload and name in kept:
                    store[name] = kept.pop(name)
    return module


def is_loaded(module: torch.nn.Module) -> bool:
    """Whether the module's tensors are where it computes (always, on the CPU machine)."""
    return not any(m.__dict__.get(OFFLOADED) for m in module.modules())


def get_torch_device():
    return CPU if vram_state is VRAMState.DISABLED else GPU


def unet_offload_device():
    return get_torch_device() if vram_state is VRAMState.HIGH_VRAM else CPU


def unet_inital_load_device():
    return get_torch_device() if vram_state is VRAMState.HIGH_VRAM else CPU


def text_encoder_device():
    """:792 on a card that computes in float16: the GPU unless VRAM is low."""
    if vram_state in (VRAMState.HIGH_VRAM, VRAMState.NORMAL_VRAM):
        return get_torch_device()
    return CPU


def text_encoder_offload_device():
    return get_torch_device() if vram_state is VRAMState.HIGH_VRAM else CPU


def module_size(module, exclude_device=None, include_device=None):
    size = 0
    for p in module.parameters():
        t = p.data
        if (exclude_device is not None and t.device == exclude_device) or (include_device is not None and t.device != include_device):
            continue
        size += t.nelement() * t.element_size()
    return size


def get_free_memory(dev=None, torch_free_too=False):
    """The CPU's free RAM (here more than any test needs), or what the emulated GPU has left."""
    dev = get_torch_device() if dev is None else dev
    if dev == CPU:
        free = 1 << 40
    else:
        used = sum(module_size(m.model.model) for m in current_loaded_models if m.device == dev)
        free = max(total_vram - used, 0)
    return (free, free) if torch_free_too else free


def minimum_inference_memory():
    return current_inference_memory


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device
        self.inclusive_memory = 0
        self.exclusive_memory = 0

    def compute_inclusive_exclusive_memory(self):
        self.inclusive_memory = module_size(self.model.model, include_device=self.device)
        self.exclusive_memory = module_size(self.model.model, exclude_device=self.device)

    def model_load(self, model_gpu_memory_when_using_cpu_swap=-1):
        self.model.model_patches_to(self.device)
        try:
            self.real_model = self.model.forge_patch_model(self.device)  # low-VRAM partial loads: emulated as full
            self.model.current_device = self.model.load_device
        except Exception:
            self.model.forge_unpatch_model(self.model.offload_device)
            self.model_unload()
            raise
        self.model.refresh_loras()
        return self.real_model

    def model_unload(self, avoid_model_moving=False):
        if avoid_model_moving:
            self.model.forge_unpatch_model()
        else:
            self.model.forge_unpatch_model(self.model.offload_device)
            self.model.model_patches_to(self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    for i in [i for i in range(len(current_loaded_models)) if model.is_clone(current_loaded_models[i].model)][::-1]:
        current_loaded_models.pop(i).model_unload(avoid_model_moving=True)


def free_memory(memory_required, device, keep_loaded=[], free_all=False):
    for i in range(len(current_loaded_models) - 1, -1, -1):
        if sys.getrefcount(current_loaded_models[i].model) <= 2:
            current_loaded_models.pop(i).model_unload(avoid_model_moving=True)
    if free_all:
        memory_required = 1e30
    offload_everything = ALWAYS_VRAM_OFFLOAD or vram_state is VRAMState.NO_VRAM
    for i in range(len(current_loaded_models) - 1, -1, -1):
        if not offload_everything and get_free_memory(device) > memory_required:
            break
        shift_model = current_loaded_models[i]
        if shift_model.device == device and shift_model not in keep_loaded:
            current_loaded_models.pop(i).model_unload()


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    memory_to_free = max(minimum_inference_memory(), memory_required) + hard_memory_preservation
    models_to_load, models_already_loaded = [], []
    for x in models:
        loaded_model = LoadedModel(x)
        if loaded_model in current_loaded_models:
            current_loaded_models.insert(0, current_loaded_models.pop(current_loaded_models.index(loaded_model)))
            models_already_loaded.append(loaded_model)
        else:
            models_to_load.append(loaded_model)
    if not models_to_load:
        for d in {m.device for m in models_already_loaded}:
            if d != CPU:
                free_memory(memory_to_free, d, models_already_loaded)
        return
    for loaded_model in models_to_load:
        unload_model_clones(loaded_model.model)
    total_memory_required = {}
    for loaded_model in models_to_load:
        loaded_model.compute_inclusive_exclusive_memory()
        total_memory_required[loaded_model.device] = (total_memory_required.get(loaded_model.device, 0)
                                                      + loaded_model.exclusive_memory + loaded_model.inclusive_memory * 0.25)
    for device, required in total_memory_required.items():
        if device != CPU:
            free_memory(required * 1.3 + memory_to_free, device, models_already_loaded)
    for loaded_model in models_to_load:
        loaded_model.model_load()
        current_loaded_models.insert(0, loaded_model)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force=False):
    pass
