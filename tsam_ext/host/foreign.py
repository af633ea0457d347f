"""Other extensions' code in the UNet call, named by the extension folder it lives in: what the
message says when a guidance pass's maps or gradient are cut (``GuidedPass.explain``)."""

import inspect
import os

FOLDERS = ("extensions", "extensions-builtin")


def extension_of(fn) -> str | None:
    """The extension folder whose file defines ``fn`` (decorators unwrapped), or None."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(getattr(fn, "__func__", fn)))
    except TypeError:
        return None
    parts = os.path.normpath(path or "").split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i - 1] in FOLDERS:
            return parts[i]
    return None


def replaced_forwards(unet, others=()) -> dict[str, list[str]]:
    """extension -> the UNet's modules whose ``forward`` it replaced (the UNet itself as "UNet"),
    plus the extensions of the callables in ``others`` (a host's patch functions)."""
    found: dict[str, list[str]] = {}
    for name, module in unet.named_modules():
        fn = vars(module).get("forward")
        extension = extension_of(fn) if fn is not None else None
        if extension is not None:
            found.setdefault(extension, []).append(name or "UNet")
    for fn in others:
        extension = extension_of(fn)
        if extension is not None:
            found.setdefault(extension, [])
    return found


def describe(found: dict[str, list[str]]) -> str | None:
    """'sd-webui-controlnet replaces the forward of UNet, input_blocks.1...' for the message, or None."""
    if not found:
        return None
    parts = []
    for extension, modules in found.items():
        shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")
        parts.append(f"{extension} replaces the forward of {shown}" if modules else f"{extension} patches the UNet")
    return "in the UNet call: " + "; ".join(parts)
