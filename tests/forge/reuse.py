"""Forge keeps many of A1111 1.10.1's modules as they were. Their stand-ins are the A1111 stand-in's
files (tests/a1111), executed as the Forge stand-in's modules, so that their own ``from modules
import ...`` finds Forge's stand-ins."""

import os

A1111 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "a1111")


def a1111(path: str, namespace: dict) -> None:
    """Run tests/a1111/``path`` in ``namespace`` (a module's ``globals()``)."""
    filename = os.path.join(A1111, path)
    with open(filename) as f:
        exec(compile(f.read(), filename, "exec"), namespace)
