"""``regfs install-pyfuse3``: pyfuse3 with regfs's patches (kernel caching, a faster
import), built and installed into the Python environment regfs runs in.

Application layer. A plain ``pip install regfs`` or ``pipx install regfs`` gets the stock
pyfuse3, with which every open and directory listing reaches the daemon (a warm ``find``
costs ~13x a local disk instead of ~1x; docs/design.md, "Kernel caching"), and its import
asks importlib.metadata for its version (~20 ms of every mount's start). The patches ship
in regfs's wheel (``regfs/patches/``). This command has pip download pyfuse3's sdist,
checks it against the hash the patches were written for, patches it, builds a wheel (Cython
and a C compiler against libfuse3: minutes) and installs it with this interpreter's pip:
into regfs's own venv, whichever tool made it. The wheel is kept in the cache dir, so a
reinstall is quick. ``scripts/build-pyfuse3.sh`` runs it with ``--build-only``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

VERSION = "3.5.0"
SDIST_SHA256 = "88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24"
"""pyfuse3 3.5.0's sdist: the source the patches apply to."""
PATCHES = ("pyfuse3-kernel-caching.patch", "pyfuse3-version-without-metadata.patch")
"""Applied in this order."""
DEBIAN_PACKAGES = "libfuse3-dev pkg-config gcc python3-dev patch"
"""What the build needs on Debian and Ubuntu (said when something is missing)."""


class BuildError(Exception):
    """The wheel could not be built; the message says what to do."""


def default_wheel_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "regfs" / "pyfuse3"


def patches() -> list[bytes]:
    return [(importlib.resources.files("regfs") / "patches" / name).read_bytes()
            for name in PATCHES]  # fmt: skip


def local_version(patches: list[bytes]) -> str:
    """The version the patched build carries: ``pip list`` shows which patches it has."""
    digest = hashlib.sha256(b"".join(hashlib.sha256(patch).digest() for patch in patches))
    return f"{VERSION}+regfs.{digest.hexdigest()[:12]}"


def run(args: argparse.Namespace) -> int:
    try:
        wheel = built_wheel(args.wheel_dir or default_wheel_dir())
        if args.build_only:
            print(wheel)
            return 0
        _pip("install", "--force-reinstall", "--no-deps", str(wheel))
    except BuildError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    print(f"installed {wheel.name} into {sys.prefix}: mounts made from now on let the kernel "
          "cache (their log says `kernel caching on`)")  # fmt: skip
    return 0


def built_wheel(wheel_dir: Path) -> Path:
    """The patched wheel in ``wheel_dir``, built there first if these patches have none."""
    patched_with = patches()
    version = local_version(patched_with)
    found = sorted(wheel_dir.glob(f"pyfuse3-{version}-*.whl"))
    if found:
        return found[0]
    _check_build_tools()
    with tempfile.TemporaryDirectory(prefix="regfs-pyfuse3-") as work:
        source = _patched_source(Path(work), patched_with)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        for old in wheel_dir.glob("pyfuse3-*.whl"):
            old.unlink()
        print(f"building pyfuse3 {version} (a few minutes)", file=sys.stderr)
        environment = {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION": version}
        _pip("wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(source), env=environment)
    found = sorted(wheel_dir.glob(f"pyfuse3-{version}-*.whl"))
    if not found:
        raise BuildError(f"pip built no pyfuse3 {version} wheel in {wheel_dir}")
    return found[0]


def _patched_source(work: Path, patched_with: list[bytes]) -> Path:
    """pyfuse3's sdist, checked against ``SDIST_SHA256``, unpacked and patched."""
    _pip("download", "--no-binary", ":all:", "--no-deps", "--dest", str(work),
         f"pyfuse3=={VERSION}")  # fmt: skip
    sdist = work / f"pyfuse3-{VERSION}.tar.gz"
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != SDIST_SHA256:
        raise BuildError(f"{sdist.name} from the package index is not the one patched here")
    _run(["tar", "-xzf", str(sdist), "-C", str(work)])
    source = work / f"pyfuse3-{VERSION}"
    for patch in patched_with:
        _run(["patch", "--quiet", "-p1", "-d", str(source)], stdin=patch)
    (source / "src/pyfuse3/__init__.c").unlink(missing_ok=True)  # made from the patched .pyx
    return source


def _check_build_tools() -> None:
    """Fail early, naming the packages, rather than deep in a compiler's output."""
    missing = [tool for tool in ("pkg-config", "cc", "patch", "tar") if not shutil.which(tool)]
    if not missing and subprocess.run(["pkg-config", "--exists", "fuse3"], check=False).returncode:
        missing.append("libfuse3 headers (pkg-config fuse3)")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        missing.append(f"Python headers ({include}/Python.h)")
    if missing:
        raise BuildError(f"building pyfuse3 needs {', '.join(missing)}; on Debian or Ubuntu: "
                         f"apt-get install {DEBIAN_PACKAGES}")  # fmt: skip


def _pip(*arguments: str, env: dict[str, str] | None = None) -> None:
    """This interpreter's pip: the environment regfs is installed in."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*command, *arguments], env=env)


def _run(command: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> None:
    """Run a build step, its output on stderr (stdout may carry the wheel's path)."""
    result = subprocess.run(command, input=stdin, stdout=sys.stderr.fileno(), check=False, env=env)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(command[:4])} … failed (exit {result.returncode})")
