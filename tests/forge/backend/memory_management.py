"""Mirrors backend/memory_management.py as Forge runs on a CPU (--always-cpu): nothing moves,
but loading a patcher for use (``load_models_gpu``; ``LoadedModel.model_load``) still ends with
``refresh_loras()`` (:518), which merges the patcher's LoRA patches into its weights."""

import torch

signal_empty_cache = False
loaded = []  # every patcher loaded for use, in order (tests read it)


def text_encoder_device():
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    for m in models:
        loaded.append(m)
        m.refresh_loras()


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    loaded.clear()


def soft_empty_cache(force=False):
    pass


def get_free_memory(dev=None, torch_free_too=False):
    """--always-cpu: the system's free RAM; here more than any test batch needs."""
    return 1 << 40
