"""Checks that an environment holds exactly the locked versions (CI runs it after `make install`).

    python .ci/check_lock.py                    # this interpreter's packages against requirements.lock
    python .ci/check_lock.py --lock requirements.lock --requirements requirements.txt

Fails (exit 1, the differences listed) when a locked package is missing or at another version, when a package not
in the lock is installed, or when a requirement of requirements.txt is not pinned in the lock at a version it allows.
pip and setuptools, which the virtual environment brings itself, are not compared.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

IGNORED = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """name -> version of a lock's `name==version` lines (comments, options and markers ignored)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split(";", 1)[0].split("==", 1)
            pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """What differs between the lock and the installed packages, one line each."""
    out = []
    for name in sorted(set(locked) | set(present)):
        if name in IGNORED:
            continue
        if name not in present:
            out.append(f"missing: {name}=={locked[name]}")
        elif name not in locked:
            out.append(f"not in the lock: {name}=={present[name]}")
        elif Version(locked[name]) != Version(present[name]):
            out.append(f"{name}: locked {locked[name]}, installed {present[name]}")
    return out


def unpinned(requirements: str, locked: dict[str, str]) -> list[str]:
    """Requirements (of requirements.txt) the lock does not pin at a version they allow."""
    out = []
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        pin = locked.get(canonical(requirement.name))
        if pin is None or not requirement.specifier.contains(Version(pin), prereleases=True):
            out.append(f"{line}: locked {pin or 'nowhere'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lock", default="requirements.lock")
    p.add_argument("--requirements", default="requirements.txt")
    args = p.parse_args(argv)
    locked = read_pins(Path(args.lock).read_text())
    problems = unpinned(Path(args.requirements).read_text(), locked) + differences(locked, installed())
    for problem in problems:
        print(problem)
    print(f"{len(locked)} locked packages: " + ("installed exactly" if not problems else f"{len(problems)} differ"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
