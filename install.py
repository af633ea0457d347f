"""Run by the WebUI at every launch and after "Install from URL". T-SAM needs nothing beyond what
the WebUI ships, so this only checks, offline, that this WebUI has what T-SAM uses, and says
clearly what to do when it does not. It installs nothing and prints nothing when all is well."""

import importlib.metadata
import os
import sys

MINIMUM = "1.10.0"  # InputAccordion arrived in 1.6.0, the process_before_every_sampling hook in 1.10.0; tested on 1.10.1
NEEDED = {  # file of the WebUI -> text it must contain, and why
    "modules/ui_components.py": ("class InputAccordion", "the accordion with an enable checkbox"),
    "modules/scripts.py": ("def process_before_every_sampling", "the hook that runs before each sampling pass"),
    "modules/sd_samplers_cfg_denoiser.py": ("class CFGDenoiser", "the denoiser T-SAM steers"),
}


def webui_root() -> str:
    """The WebUI runs installers with its root first on PYTHONPATH (and as the working directory)."""
    first = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    return first if first and os.path.isdir(os.path.join(first, "modules")) else os.getcwd()


def problems(root: str) -> list[str]:
    found = []
    for rel, (text, why) in NEEDED.items():
        path = os.path.join(root, rel)
        try:
            with open(path, encoding="utf-8") as f:
                present = text in f.read()
        except OSError:
            present = False
        if not present:
            found.append(f"{rel} has no '{text}' ({why})")
    try:
        torch_major = int(importlib.metadata.version("torch").split(".")[0])
        if torch_major < 2:
            found.append(f"torch {importlib.metadata.version('torch')} is older than 2.0 (forward hooks with keyword arguments)")
    except importlib.metadata.PackageNotFoundError:
        found.append("torch is not installed in this Python")
    return found


def main() -> int:
    found = problems(webui_root())
    if found:
        print(f"T-SAM: this WebUI is too old for T-SAM, which needs AUTOMATIC1111 WebUI {MINIMUM} or newer "
              "(tested on 1.10.1). Update the WebUI (git pull in its folder), then restart. Missing:")
        for item in found:
            print(f"  - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
