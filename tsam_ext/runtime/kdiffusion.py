"""Import k-diffusion's ``sampling`` and ``external`` modules where torchvision is missing.

k-diffusion 0.0.16 (the release A1111 1.10.1 pins) imports every submodule from its package
``__init__`` (training needs scikit-image, clean-fid, ...), and ``utils`` imports torchvision
for two PIL converters that the samplers never call. A WebUI has torchvision and imports k-diffusion normally; the standalone runner and the
tests load just ``utils``, ``sampling`` and ``external`` from the installed files, with those
two converters bound to a module that says why it is unavailable.
"""

import importlib
import importlib.util
import sys
import types


def _unavailable(*_args, **_kwargs):
    raise RuntimeError("torchvision is not installed; k-diffusion's PIL converters are unavailable")


def load():
    """(k_diffusion.sampling, k_diffusion.external), the real modules."""
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    except ModuleNotFoundError:
        pass  # the package __init__ needs what only training uses (skimage, torchvision, ...)
    for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("k_diffusion")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["k_diffusion"] = package
    stub = types.ModuleType("torchvision.transforms.functional")
    stub.to_tensor = stub.to_pil_image = _unavailable
    saved = {n: sys.modules.get(n) for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")}
    sys.modules.update({"torchvision": types.ModuleType("torchvision"),
                        "torchvision.transforms": types.ModuleType("torchvision.transforms"),
                        "torchvision.transforms.functional": stub})
    sys.modules["torchvision.transforms"].functional = stub
    try:
        modules = [importlib.import_module(f"k_diffusion.{m}") for m in ("utils", "sampling", "external")]
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    for m in modules:
        setattr(package, m.__name__.rsplit(".", 1)[1], m)
    return modules[1], modules[2]
