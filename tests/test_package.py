"""`pip install .` installs the `modeling` package: the wheel holds every module and loads on its own."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_the_modeling_package(tmp_path):
    source = tmp_path / "src"  # a copy, so the build's own folders never land in the repo
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "modeling", source / "modeling", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("fashion_search-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"modeling/{p.name}" for p in (REPO / "modeling").glob("*.py")}
    assert modules <= names and not any(n.startswith(("tests/", "runs/", "app")) for n in names)
    # Installed apart from the repo, the package imports and registers its models with the Auto classes.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import modeling, transformers; from modeling import DualEncoderConfig; "
            "assert transformers.AutoConfig.for_model('fashion_dual_encoder').__class__ is DualEncoderConfig; "
            "print(modeling.__file__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().startswith(str(target))
