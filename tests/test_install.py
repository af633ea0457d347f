"""install.py only checks: silent on a WebUI that has what T-SAM uses, a clear message on an old one."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = {
    "modules/ui_components.py": "class InputAccordion(gr.Checkbox):\n",
    "modules/scripts.py": "class Script:\n    def process_before_every_sampling(self, p, *args, **kwargs):\n",
    "modules/sd_samplers_cfg_denoiser.py": "class CFGDenoiser(torch.nn.Module):\n",
}


def run_installer(root):
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, os.path.join(ROOT, "install.py")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)


def make_webui(tmp_path, skip=()):
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if rel in skip else text)
    return tmp_path


def test_silent_on_a_current_webui(tmp_path):
    done = run_installer(make_webui(tmp_path))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


@pytest.mark.parametrize("missing", list(FILES))
def test_says_what_is_missing_on_an_old_webui(tmp_path, missing):
    done = run_installer(make_webui(tmp_path, skip=(missing,)))
    assert done.returncode == 0
    assert "too old for T-SAM" in done.stdout and "1.10.0 or newer" in done.stdout and missing in done.stdout


def test_installs_nothing():
    source = open(os.path.join(ROOT, "install.py")).read()
    assert "run_pip" not in source and "pip install" not in source and "urlopen" not in source
