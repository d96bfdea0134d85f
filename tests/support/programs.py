"""A small image a container can run: the host's ``cat`` and ``sha256sum`` with the
libraries they load, in two layers (the second adds a file and whites one out).

Made with umoci from the host's own files, so no mirror or download is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.images import build_image, run

PROGRAMS = ("/usr/bin/cat", "/usr/bin/sha256sum")
BIG_FILE_SIZE = 3 << 20
"""A file of the first layer larger than a chunk: reading it costs more than the TOC."""


def _libraries(program: str) -> set[str]:
    """The shared objects ``program`` loads (as ``ldd`` lists them), and its interpreter."""
    listing = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
    return set(re.findall(r"(/\S+\.so[.\d]*)", listing.stdout))


def program_files() -> dict[str, bytes]:
    """The programs and their libraries, by path in the image (links followed)."""
    paths = set(PROGRAMS)
    for program in PROGRAMS:
        paths |= _libraries(program)
    return {path.lstrip("/"): Path(path).read_bytes() for path in sorted(paths)}


def build_program_image(layout: Path, tag: str, big_file_size: int = BIG_FILE_SIZE) -> None:
    """Layer 0: ``/etc/os-release``, ``/data/big`` (random, ``big_file_size`` bytes) and
    ``/data/gone``; layer 1: the programs, ``/data/new`` (naming ``tag``), and
    ``/data/gone`` removed (a whiteout). Each call makes layers of its own: images built
    apart share no blob."""
    files = {
        "etc/os-release": Path("/etc/os-release").read_bytes(),
        "data/big": os.urandom(big_file_size),
        "data/gone": b"removed by the second layer\n",
    }
    build_image(layout, tag, files)
    bundle = layout.parent / f"bundle-{tag}-2"
    image = f"{layout}:{tag}"
    run("umoci", "unpack", "--image", image, bundle)
    for name, data in program_files().items():
        path = bundle / "rootfs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755)
    (bundle / "rootfs/data/new").write_bytes(f"added by the second layer of {tag}\n".encode())
    (bundle / "rootfs/data/gone").unlink()
    run("umoci", "repack", "--image", image, bundle)
    shutil.rmtree(bundle)
