"""Crafted layers whose reading tools disagree on, or regfs once did: what a layer dir and
rootfs/ show against ``umoci unpack`` and GNU ``tar -x``, and, where those two unpackers
and a container's overlayfs differ, against an overlayfs mount of the layer dirs (what a
container through podman or the layer store sees).

Each case was found by a review on fac3c49; each test of a fix fails on that code. So
were the cases of one layer blob shown at several paths and of a rootless overlayfs,
found by a review on 8647150.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.crafted import directory, gzipped, member, push_layers, tar_of
from tests.support.mount import Mount
from tests.support.registry import Registry

pytestmark = pytest.mark.mount


def pax(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    return tar_of(members, tarfile.PAX_FORMAT)


def ustar_header(info: tarfile.TarInfo, size: int | None = None) -> bytes:
    """A ustar header; ``size`` overwrites its size field (the checksum made again)."""
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    if size is not None:
        block[124:136] = b"%011o\0" % size
        block[148:156] = b" " * 8
        block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def sized_directory_layer() -> bytes:
    """A directory header whose size field says 512 (old tars wrote a dir's size there),
    then an empty file's header where that "data" would be."""
    hidden, _ = member("hidden", b"")
    after, data = member("after", b"after\n")
    return b"".join([
        ustar_header(directory("d")[0], 512), ustar_header(hidden), ustar_header(after),
        data, bytes(512 - len(data)), bytes(1024),
    ])  # fmt: skip


SYMLINK = tarfile.SYMTYPE
SELINUX_HEADER = "SCHILY.xattr.security.selinux"
SHARED = pax(directory("d"), member("d/f", b"f\n"))
LAYERS = {
    "layer-twice": [SHARED, pax(member("m", b"m\n")), SHARED],
    "opaque-dir": [
        pax(directory("d"), member("d/lower", b"lower\n")),
        pax(directory("d"), member("d/.wh..wh..opq"), member("d/upper", b"upper\n")),
    ],
    "whiteout-then-dir": [
        pax(directory("d"), member("d/lower", b"lower\n")),
        pax(member(".wh.d"), directory("d"), member("d/new", b"new\n")),
    ],
    "whiteout-then-child": [
        pax(directory("d"), member("d/lower", b"lower\n")),
        pax(member(".wh.d"), member("d/new", b"new\n")),
    ],
    "file-then-whiteout": [
        pax(member("a", b"lower\n")),
        pax(member("a", b"upper\n"), member(".wh.a")),
    ],
    "dir-then-whiteout": [
        pax(directory("d"), member("d/lower", b"lower\n")),
        pax(directory("d"), member("d/upper", b"upper\n"), member(".wh.d")),
    ],
    "sized-dir": [sized_directory_layer()],
    "old-style-dir": [
        tar_of(
            [member("olddir/", None, type=tarfile.AREGTYPE), member("olddir/f", b"f\n")],
            tarfile.USTAR_FORMAT,
        )
    ],
    "symlink-mode": [pax(member("s", None, type=SYMLINK, linkname="/etc/passwd"))],
    "far-future-mtime": [pax(member("ok", b"ok\n"), member("later", b"", mtime=2**40))],
    "whiteout-below-lower-file": [pax(member("f", b"file\n")), pax(member("f/.wh.x"))],
    "selinux-label": [
        pax(
            member(
                "f",
                b"f\n",
                pax_headers={
                    SELINUX_HEADER: "system_u:object_r:etc_t:s0",
                    "SCHILY.xattr.user.kept": "kept",
                },
            )
        ),
    ],
    "no-owner-id": [pax(member("f", b"f\n", uid=2**32 - 1, gid=2**32 - 1))],
    "files-below-a-lower-symlink": [
        pax(directory("t"), member("d/a", b"a\n")),
        pax(member(".wh.d"), member("d", None, type=SYMLINK, linkname="t")),
        pax(member("d/b", b"b\n")),
    ],
}


@pytest.fixture(scope="module")
def registry(workdir: Path) -> Iterator[Registry]:
    registry = Registry(workdir / "layer-semantics-registry")
    for name, layers in LAYERS.items():
        push_layers(registry.url, f"crafted/{name}:1", [gzipped(layer) for layer in layers])
    push_layers(registry.url, "crafted/layer-twice:base", [gzipped(SHARED)])  # another image
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def mount(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = Mount(tmp_path_factory.mktemp("layer-semantics") / "mnt", "--timeout", "5")
    yield mount
    mount.close()


def image(mount: Mount, registry: Registry, name: str) -> Path:
    return mount / registry.host / f"crafted/{name}/1"


def test_a_directory_made_again_after_its_whiteout_shows_none_of_the_lower_one(
    registry: Registry, mount: Mount
) -> None:
    for name in ("whiteout-then-dir", "whiteout-then-child"):
        assert os.listdir(image(mount, registry, name) / "rootfs/d") == ["new"]  # umoci


def test_a_whiteout_hides_lower_layers_only_never_its_own(registry: Registry, mount: Mount) -> None:
    """OCI: "files that are present in the same layer as a whiteout file can only be
    hidden by whiteout files in subsequent layers" (umoci agrees)."""
    assert (image(mount, registry, "file-then-whiteout") / "rootfs/a").read_bytes() == b"upper\n"
    rootfs = image(mount, registry, "dir-then-whiteout") / "rootfs"
    assert os.listdir(rootfs / "d") == ["upper"]


def test_a_header_only_member_has_no_data_whatever_its_size_says(
    registry: Registry, mount: Mount
) -> None:
    top = image(mount, registry, "sized-dir")
    for tree in (top / "0", top / "rootfs"):  # tar -x and umoci: d, hidden, after
        assert sorted(os.listdir(tree)) == ["after", "d", "hidden"]
    assert (top / "rootfs/after").read_bytes() == b"after\n"


def test_an_old_style_regular_member_ending_in_slash_is_a_directory(
    registry: Registry, mount: Mount
) -> None:
    top = image(mount, registry, "old-style-dir")
    for tree in (top / "0", top / "rootfs"):  # tar -x, umoci, Python's tarfile
        assert (tree / "olddir/f").read_bytes() == b"f\n"


def test_a_symlink_shows_mode_0777(registry: Registry, mount: Mount) -> None:
    top = image(mount, registry, "symlink-mode")
    for tree in (top / "0", top / "rootfs"):  # as tar -x and umoci leave it
        assert stat.S_IMODE((tree / "s").lstat().st_mode) == 0o777


def test_one_far_future_mtime_is_clamped_not_the_layer_refused(
    registry: Registry, mount: Mount
) -> None:
    rootfs = image(mount, registry, "far-future-mtime") / "rootfs"
    assert (rootfs / "ok").read_bytes() == b"ok\n"
    assert (rootfs / "later").stat().st_mtime_ns == (1 << 63) - 1  # tar -x clamps too


@pytest.mark.parametrize("name", ["whiteout-below-lower-file", "files-below-a-lower-symlink"])
def test_where_umoci_and_a_container_differ_rootfs_is_what_the_container_sees(
    registry: Registry, mount: Mount, tmp_path: Path, name: str
) -> None:
    """A directory in an upper layer over a lower file or symlink: overlayfs (podman,
    Docker's overlay2, the layer store) shows the directory; umoci, which unpacks one layer
    over the other, keeps the file, or writes through the symlink. rootfs/ is the
    container's view, an overlay of the layer dirs."""
    top = image(mount, registry, name)
    assert _listing(top / "rootfs") == _overlay_listing(top, tmp_path / "overlay")


def test_a_layer_twice_in_an_image_is_two_lowerdirs_to_overlayfs(
    registry: Registry, mount: Mount, tmp_path: Path
) -> None:
    """One blob at positions 0 and 2: overlayfs refused the layer dirs (ELOOP, "Too many
    levels of symbolic links") while they were one inode."""
    top = image(mount, registry, "layer-twice")
    assert _listing(top / "rootfs") == _overlay_listing(top, tmp_path / "overlay")


def test_a_shell_in_a_layer_dir_stays_there_while_another_image_shows_the_layer(
    registry: Registry, mount: Mount
) -> None:
    """The kernel keeps one dentry per directory inode: while two tags' ``0/d`` were one,
    a lookup in the second image moved the first one's shell's cwd (and its ``..``) there."""
    first = (image(mount, registry, "layer-twice").parent / "base").resolve()
    second = image(mount, registry, "layer-twice").resolve()
    script = 'cd "$1/0/d" && stat "$2/0/d" "$2/2/d" >/dev/null && pwd -P && cd .. && pwd -P'
    shell = subprocess.run(
        ["sh", "-c", script, "sh", str(first), str(second)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shell.stdout.splitlines() == [f"{first}/0/d", f"{first}/0"]


def test_an_opaque_dir_hides_the_lower_ones_from_a_rootless_overlayfs_too(
    registry: Registry, mount: Mount, tmp_path: Path
) -> None:
    """overlayfs mounted with ``userxattr`` (rootless podman's) reads ``user.overlay.*``
    only: while the layer dirs had ``trusted.overlay.opaque`` alone, it showed
    ``d/lower`` below the opaque ``d``."""
    top = image(mount, registry, "opaque-dir")
    expected = _listing(top / "rootfs")
    assert "d/lower" not in expected
    assert _overlay_listing(top, tmp_path / "overlay", "ro,userxattr") == expected


def _overlay_listing(top: Path, target: Path, options: str = "ro") -> dict[str, tuple[int, bytes]]:
    """``_listing`` of an overlayfs mount of the layer dirs of image dir ``top``."""
    layers = sorted((p.name for p in top.iterdir() if p.name.isdigit()), key=int, reverse=True)
    target.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"{options},lowerdir={':'.join(layers)}",
         str(target)], cwd=top, check=True,
    )  # fmt: skip
    try:
        return _listing(target)
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _listing(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below ``root``: its file type and its bytes or link target."""
    found = {}
    for directory_path, directories, files in os.walk(root):
        for name in directories + files:
            path = Path(directory_path) / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:  # overlayfs lists the whiteouts of a dir it does
                continue  # not merge (one over a lower file), and stat says ENOENT
            content = b""
            if stat.S_ISLNK(mode):
                content = os.readlink(path).encode()
            elif stat.S_ISREG(mode):
                content = path.read_bytes()
            found[str(path.relative_to(root))] = (stat.S_IFMT(mode), content)
    return found


def test_an_selinux_label_in_a_layer_is_not_shown(registry: Registry, mount: Mount) -> None:
    """As umoci and podman unpack it: the host's policy labels files, not the image."""
    for top in ("0", "rootfs"):
        path = image(mount, registry, "selinux-label") / top / "f"
        assert os.listxattr(path) == ["user.kept"]
        with pytest.raises(OSError) as raised:
            os.getxattr(path, "security.selinux")
        assert raised.value.errno == errno.ENODATA


def test_an_owner_id_of_minus_one_is_root_as_tar_extracts_it(
    registry: Registry, mount: Mount, tmp_path: Path
) -> None:
    """``(uid_t) -1`` tells chown(2) to leave the id: GNU tar run as root leaves 0 there,
    where the kernel would show the overflow id (65534) for the number itself."""
    (tmp_path / "layer.tar").write_bytes(LAYERS["no-owner-id"][0])
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-x", "--same-owner", "--numeric-owner", "-f", tmp_path / "layer.tar",
                    "-C", tmp_path / "out"], check=True)  # fmt: skip
    extracted = (tmp_path / "out/f").stat()
    assert (extracted.st_uid, extracted.st_gid) == (0, 0)
    for top in ("0", "rootfs"):
        shown = (image(mount, registry, "no-owner-id") / top / "f").stat()
        assert (shown.st_uid, shown.st_gid) == (extracted.st_uid, extracted.st_gid)
