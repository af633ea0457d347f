"""The backend is chosen by what the running WebUI is: A1111 never has Forge's packages."""

import importlib
import sys
import types

from tsam_ext.host import backend


def test_a1111_gets_the_a1111_backend(webui):
    assert not backend.running_forge() and backend.NAME == "a1111"
    assert backend.current is importlib.import_module("tsam_ext.host.a1111")


def test_forge_is_told_by_both_of_its_packages(monkeypatch):
    """``modules_forge`` alone (a fork without Forge 2's ``backend``) is not Forge 2."""
    monkeypatch.setitem(sys.modules, "modules_forge", types.ModuleType("modules_forge"))
    sys.modules["modules_forge"].__spec__ = importlib.machinery.ModuleSpec("modules_forge", None)
    assert not backend.running_forge()
    package = types.ModuleType("backend")
    package.__path__ = []
    package.__spec__ = importlib.machinery.ModuleSpec("backend", None, is_package=True)
    engine = types.ModuleType("backend.diffusion_engine")
    engine.__spec__ = importlib.machinery.ModuleSpec("backend.diffusion_engine", None)
    monkeypatch.setitem(sys.modules, "backend", package)
    monkeypatch.setitem(sys.modules, "backend.diffusion_engine", engine)
    assert backend.running_forge()
