"""regfs as its users get it: built into a wheel and installed in a fresh venv.

The mount tests run this installation, never the editable tree, so a file the wheel
lacks (package data, a module left out of the package list) fails them as it would fail
a user. The wheel is built from a copy of just what the sdist holds, so stale build
output in the work tree cannot leak into it. pyfuse3 is the build with regfs's
patches, as ``scripts/install.sh`` installs it, or the stock one from the
package index, as a plain ``pip install regfs`` gets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("pyproject.toml", "README.md", "regfs", "man")
"""What setuptools needs to build the wheel: the project file, the readme, the package,
the man page."""


def _run(command: list[str | Path], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout}\n{result.stderr}")


def install_wheel(workdir: Path, patched_pyfuse3: bool = True, wheel: Path | None = None) -> Path:
    """Install regfs's wheel (``wheel``, or one built now from the tree) into a new venv
    under ``workdir``; its ``bin/``."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    if wheel is None:
        wheel = _build_wheel(workdir, pip)
    environment = workdir / "venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    pyfuse3 = [_patched_pyfuse3()] if patched_pyfuse3 else []
    _run([bin_dir / "python", *pip[1:], "install", *pyfuse3, wheel], f"installing {wheel.name}")
    return bin_dir


def wheel_of(bin_dir: Path) -> Path:
    """The wheel ``install_wheel`` built for the venv of ``bin_dir``."""
    (wheel,) = (bin_dir.parents[1] / "wheels").glob("regfs-*.whl")
    return wheel


def _build_wheel(workdir: Path, pip: list[str]) -> Path:
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = workdir / "wheels"
    _run([*pip, "wheel", "--no-deps", "--wheel-dir", wheels, source], "building the wheel")
    (wheel,) = wheels.glob("regfs-*.whl")
    return wheel


def _patched_pyfuse3() -> Path:
    """The patched pyfuse3 wheel, built now if this patch has none yet."""
    build = subprocess.run(
        [ROOT / "scripts/build-pyfuse3.sh"], capture_output=True, text=True, timeout=900,
        check=False, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    if build.returncode != 0:
        raise RuntimeError(f"building pyfuse3 failed:\n{build.stdout}\n{build.stderr}")
    return ROOT / build.stdout.strip().splitlines()[-1]


def clean_environment() -> dict[str, str]:
    """The tests' environment without what would let the installed regfs import the tree."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
