"""A real, layered test image: a Debian minbase rootfs plus upper layers that use every tar
feature regfs must get right, built with mmdebstrap and umoci (and two tars of our own for
what umoci never writes: opaque directories and GNU long-name headers).

Layer 0: ``mmdebstrap --variant=minbase`` (bookworm) or, where no Debian mirror is
reachable, a copy of this machine's /usr/bin, /usr/lib and /etc subset.
Layer 1 (umoci repack of a changed bundle): deletions, replacements, hard links, xattrs,
special files and modes, a large incompressible file, thousands of small files, deep,
unicode and long names, every kind of symlink.
Layer 2 (PAX tar): an opaque directory, a broken hard link, a whiteout, a file turned back
into a directory, a PAX xattr.
Layer 3 (GNU tar): GNU long names and long link targets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.crafted import tar_of
from tests.support.images import run
from tests.support.installed import ROOT

BIG_FILE_SIZE = 8 << 20
SMALL_FILES = 3000
CAPABILITY = bytes.fromhex("0100000200040000000000000000000000000000")  # cap_net_bind_service+e


def debian_rootfs(target: Path) -> None:
    """A minbase Debian in ``target`` (about 20 s), made once per test session."""
    target.parent.mkdir(parents=True, exist_ok=True)
    run("mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "bookworm", target)


def _change_bundle(rootfs: Path, big_file_size: int) -> None:
    shutil.rmtree(rootfs / "usr/share/doc")  # many whiteouts
    (rootfs / "usr/share/doc").mkdir()
    (rootfs / "etc/issue").write_text("regfs layered image\n")
    shutil.rmtree(rootfs / "usr/share/common-licenses")  # a directory replaced by a file
    (rootfs / "usr/share/common-licenses").write_text("now a file\n")
    (rootfs / "etc/debian_version").unlink()  # a file replaced by a directory
    (rootfs / "etc/debian_version").mkdir()
    (rootfs / "etc/debian_version/inner").write_text("inside\n")
    test = rootfs / "regfs-test"
    test.mkdir()
    (test / "big.bin").write_bytes(os.urandom(big_file_size))
    small = test / "small"
    small.mkdir()
    for number in range(SMALL_FILES):
        (small / f"f{number:04}").write_text(f"small file {number}\n")
    hard = test / "hard"
    hard.mkdir()
    (hard / "a").write_text("linked content\n")
    os.link(hard / "a", hard / "b")
    os.link(hard / "a", hard / "c")
    xattrs = test / "xattrs"
    xattrs.write_text("has attributes\n")
    os.setxattr(xattrs, "user.regfs.test", b"hello")
    os.setxattr(xattrs, "security.capability", CAPABILITY)
    for name, mode in (("setuid", 0o4755), ("setgid", 0o2755)):
        (test / name).write_text(name)
        os.chmod(test / name, mode)
    (test / "sticky").mkdir()
    os.chmod(test / "sticky", 0o1777)
    os.mkfifo(test / "fifo")
    os.mknod(test / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(test / "loop", 0o660 | 0o060000, os.makedev(7, 0))
    (test / "empty-file").write_bytes(b"")
    (test / "empty-dir").mkdir()
    (test / "owned").write_text("numeric owner\n")
    os.chown(test / "owned", 1234, 5678)
    deep = test / "deep"
    for level in range(30):
        deep = deep / f"level{level}"
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("deep\n")
    (test / "héllo wörld ✓.txt").write_text("unicode\n")
    (test / ("long-" + "n" * 200)).write_text("long name\n")
    long_dir = test / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / "file").write_text("long path\n")
    links = {
        "abs": "/etc/passwd",
        "rel": "../etc/hostname",
        "dangling": "/nonexistent",
        "escaping": "../../../../../../etc/shadow",
    }
    for name, target in links.items():
        os.symlink(target, test / f"link-{name}")
    opaque = test / "opaque"
    opaque.mkdir()
    (opaque / "old1").write_text("hidden by layer 2\n")
    (opaque / "old2").write_text("hidden by layer 2\n")


def _member(
    name: str, data: bytes | None = None, **fields: object
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    info.mode = 0o644
    if data is None:
        info.type = fields.pop("type", tarfile.DIRTYPE)  # type: ignore[assignment]
        info.mode = 0o755
    else:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def pax_layer() -> bytes:
    return tar_of(
        [
            _member("regfs-test/opaque/"),
            _member("regfs-test/opaque/.wh..wh..opq", b""),
            _member("regfs-test/opaque/only-this", b"the only file left\n"),
            _member("regfs-test/hard/a", b"replaced: the link to b and c is broken\n"),
            _member("regfs-test/small/.wh.f0000", b""),
            _member("usr/share/common-licenses/"),  # a file turned back into a directory
            _member("usr/share/common-licenses/back", b"a directory again\n"),
            _member("regfs-test/pax-xattr", b"x\n", pax_headers={"SCHILY.xattr.user.pax": "value"}),
        ],
        tarfile.PAX_FORMAT,
    )


def gnu_layer() -> bytes:
    long_dir = "regfs-test/gnu-" + "g" * 150
    return tar_of(
        [
            _member(long_dir + "/"),
            _member(long_dir + "/file-" + "f" * 120, b"GNU long name\n"),
            _member("regfs-test/gnu-link", type=tarfile.SYMTYPE, linkname="t" * 200, mode=0o777),
        ],
        tarfile.GNU_FORMAT,
    )


def build_layered(layout: Path, tag: str, rootfs: Path, big_file_size: int = BIG_FILE_SIZE) -> None:
    """The four-layer image at ``layout:tag`` (see the module docstring)."""
    run("umoci", "init", "--layout", layout)
    image = f"{layout}:{tag}"
    run("umoci", "new", "--image", image)
    run("umoci", "insert", "--image", image, rootfs, "/")
    bundle = layout.parent / f"bundle-{tag}"
    run("umoci", "unpack", "--image", image, bundle)
    _change_bundle(bundle / "rootfs", big_file_size)
    run("umoci", "repack", "--image", image, bundle)
    shutil.rmtree(bundle)
    for number, data in enumerate((pax_layer(), gnu_layer())):
        tar = layout.parent / f"crafted-{number}.tar"
        tar.write_bytes(data)
        run("umoci", "raw", "add-layer", "--image", image, tar)
        tar.unlink()


def convert(source: Path, tag: str, destination: Path, *options: str) -> None:
    """Copy an image between OCI layouts, e.g. recompressed as zstd or decompressed."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", *options, f"oci:{source}:{tag}", f"oci:{destination}:{tag}"],
        check=True,
        capture_output=True,
    )


@dataclass(frozen=True)
class LayeredLayouts:
    """The layered image in OCI layouts, as ``make_layered`` leaves them (tag ``1``)."""

    oci: Path
    """As umoci built it: gzip layers."""
    zstd: Path
    plain: Path
    """Uncompressed layers."""
    oracle_rootfs: Path
    """``umoci unpack`` of the image: what a mount's rootfs/ must equal."""


def make_layered_apart(base: Path) -> LayeredLayouts:
    """``make_layered`` in a process of its own, with umask 022. Begun ahead in a thread of
    the test session, it made its files with whatever umask a test in the main thread had
    set meanwhile: a cache dir's private 077 (``prepare_cache_dir``) made some of the
    image's dirs 0700, and a layer's implicit dir then showed other modes in an overlay of
    the layer dirs than in ``rootfs/`` (a failure seen once in a full run)."""
    code = (
        "import os, sys; from pathlib import Path; os.umask(0o022); "
        "from tests.support.layered import make_layered; make_layered(Path(sys.argv[1]))"
    )
    made = subprocess.run([sys.executable, "-c", code, str(base)], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"the layered image was not made: {made.stderr[-2000:]}")
    return _layouts_under(base)


def _layouts_under(base: Path) -> LayeredLayouts:
    return LayeredLayouts(base / "oci", base / "zstd", base / "plain", base / "bundle/rootfs")


def make_layered(base: Path) -> LayeredLayouts:
    """The layered image under ``base``: built, recompressed, and unpacked as the oracle
    (the last three side by side: each is a process of its own)."""
    debian_rootfs(base / "debian")
    layouts = _layouts_under(base)
    build_layered(layouts.oci, "1", base / "debian")
    with ThreadPoolExecutor(max_workers=3) as pool:
        steps = [
            pool.submit(convert, layouts.oci, "1", layouts.zstd,
                        "--dest-compress", "--dest-compress-format", "zstd"),
            pool.submit(convert, layouts.oci, "1", layouts.plain, "--dest-decompress"),
            pool.submit(run, "umoci", "unpack", "--image", f"{layouts.oci}:1", base / "bundle"),
        ]  # fmt: skip
        for step in steps:
            step.result()
    return layouts
