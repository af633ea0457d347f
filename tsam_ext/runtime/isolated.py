"""Import a few submodules of an installed package without its ``__init__``, where that
``__init__`` needs what only training or image preprocessing uses (torchvision above all).

A WebUI ships torchvision and imports k-diffusion and open_clip normally; the standalone
runtime and the tests need only their samplers and text towers. The package is registered as a
bare module (its real files on ``__path__``, nothing run), the named submodules are imported from
the installed files, and the few torchvision names they import at module level are bound to
stand-ins that say why they are unavailable. The stand-ins leave ``sys.modules`` afterwards.
"""

import importlib
import importlib.util
import sys
import types


def unavailable(*_args, **_kwargs):
    raise RuntimeError("torchvision is not installed; this part of the package is unavailable")


def _stub_modules(names: dict[str, dict[str, object]]) -> dict[str, types.ModuleType]:
    """Module objects for dotted names (parents included), each with the given attributes."""
    modules: dict[str, types.ModuleType] = {}
    for dotted, attributes in names.items():
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in modules:
                modules[name] = types.ModuleType(name)
                if i > 1:
                    setattr(modules[".".join(parts[:i - 1])], parts[i - 1], modules[name])
        for key, value in attributes.items():
            setattr(modules[dotted], key, value)
    return modules


def load(package: str, submodules: list[str], stubs: dict[str, dict[str, object]]) -> list[types.ModuleType]:
    """``[package.<name> for name in submodules]``, the real modules; the package ``__init__`` runs
    only if it imports cleanly, otherwise the package stays registered bare."""
    try:
        return [importlib.import_module(f"{package}.{m}") for m in submodules]
    except ModuleNotFoundError:
        pass  # the package __init__ needs what only training / image transforms use
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    spec = importlib.util.find_spec(package)
    bare = types.ModuleType(package)
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    sys.modules[package] = bare
    fakes = _stub_modules(stubs)
    saved = {n: sys.modules.get(n) for n in fakes}
    sys.modules.update(fakes)
    try:
        modules = [importlib.import_module(f"{package}.{m}") for m in submodules]
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    for m in modules:
        setattr(bare, m.__name__.rsplit(".", 1)[1], m)
    return modules
