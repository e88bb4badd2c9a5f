"""The lock (requirements.lock): it pins every requirement of requirements.txt at a version the range allows, torch
as its CPU build, no CUDA package and no torchvision; and the check CI runs after installing (`.ci/check_lock.py`)
finds every difference between an environment and the lock."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_lock", REPO / ".ci" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_pins_every_requirement_and_torchs_cpu_build():
    check = _checker()
    locked = check.read_pins((REPO / "requirements.lock").read_text())
    assert check.unpinned((REPO / "requirements.txt").read_text(), locked) == []
    assert locked["torch"].endswith("+cpu") and "torchvision" not in locked
    assert not [name for name in locked if name.startswith(("nvidia-", "triton", "cuda-"))]
    # The loose ranges stay where library users read them.
    assert "gradio>=5" in (REPO / "requirements.txt").read_text()
    assert '"transformers>=5.0,<6"' in (REPO / "pyproject.toml").read_text()


def test_the_check_finds_every_difference():
    check = _checker()
    locked = check.read_pins("# header\nNumPy==2.1.0\n    # via x\ntorch==2.13.0+cpu ; sys_platform == 'linux'\n"
                             "gradio==6.31.0\n--extra-index-url file:///x\n")
    assert locked == {"numpy": "2.1.0", "torch": "2.13.0+cpu", "gradio": "6.31.0"}
    present = {"numpy": "2.1.0", "torch": "2.13.0+cpu", "gradio": "6.30.0", "pip": "26.3", "wordfreq": "3.1.1"}
    assert check.differences(locked, present) == ["gradio: locked 6.31.0, installed 6.30.0",
                                                  "not in the lock: wordfreq==3.1.1"]
    assert check.differences(locked, {"numpy": "2.1", "torch": "2.13.0+cpu"}) == ["missing: gradio==6.31.0"]
    assert check.unpinned("gradio>=7\n# comment\nnumpy\nscipy\n", locked) == ["gradio>=7: locked 6.31.0",
                                                                             "scipy: locked nowhere"]
