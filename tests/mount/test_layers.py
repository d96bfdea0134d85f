"""Image contents through the mount, against real oracles: GNU tar per layer, umoci unpack
for rootfs/, an overlayfs mount of the layer dirs, chroot into rootfs/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.mount.conftest import LAYERED_FORMATS, Layered
from tests.support import images
from tests.support.mount import Mount
from tests.support.trees import differences, extract_layer, snapshot

pytestmark = pytest.mark.mount


def manifest_layers(layered: Layered) -> list[str]:
    body, _, _ = images.get_manifest(layered.registry.url, "layered/oci", "1")
    return [layer["digest"] for layer in json.loads(body)["layers"]]


def test_image_dir_shows_layers_links_and_rootfs(mnt: Mount, layered: Layered) -> None:
    image = layered.image(mnt, "oci")
    digests = [d.replace(":", "-") for d in manifest_layers(layered)]
    assert sorted(os.listdir(image)) == sorted(
        ["0", "1", "2", "3", "bottom", "top", "config", "manifest", "rootfs", *digests]
    )
    assert os.readlink(image / "bottom") == "0"
    assert os.readlink(image / "top") == "3"
    assert [os.readlink(image / d) for d in digests] == ["0", "1", "2", "3"]
    assert os.getxattr(image / "1", "user.regfs.digest").decode() == manifest_layers(layered)[1]


def test_layer_dirs_equal_gnu_tar_in_overlay_form(
    mnt: Mount, layered: Layered, tmp_path: Path
) -> None:
    image = layered.image(mnt, "oci")
    for position, digest in enumerate(manifest_layers(layered)):
        oracle = tmp_path / str(position)
        extract_layer(layered.layout / "blobs" / "sha256" / digest.split(":")[1], oracle)
        found = differences(snapshot(image / str(position)), snapshot(oracle))
        assert not found, f"layer {position}:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def oracle_snapshot(layered: Layered) -> dict[str, tuple[object, ...]]:
    return snapshot(layered.oracle_rootfs)


@pytest.mark.parametrize("image_format", LAYERED_FORMATS)
def test_rootfs_equals_umoci_unpack(
    mnt: Mount,
    layered: Layered,
    image_format: str,
    oracle_snapshot: dict[str, tuple[object, ...]],
) -> None:
    found = differences(snapshot(layered.image(mnt, image_format) / "rootfs"), oracle_snapshot)
    assert not found, "\n".join(found)


def test_rootfs_details(mnt: Mount, layered: Layered) -> None:
    rootfs = layered.image(mnt, "oci") / "rootfs"
    test = rootfs / "regfs-test"
    assert os.listdir(test / "opaque") == ["only-this"]
    assert (test / "hard/b").read_text() == "linked content\n"
    assert (test / "hard/a").read_text().startswith("replaced")
    assert os.stat(test / "hard/b").st_ino == os.stat(test / "hard/c").st_ino
    assert os.stat(test / "hard/b").st_nlink == 2
    assert not (test / "small/f0000").exists()
    assert (rootfs / "usr/share/common-licenses/back").is_file()
    assert os.readlink(test / "link-escaping") == "../../../../../../etc/shadow"
    assert os.getxattr(test / "xattrs", "security.capability") != b""
    assert os.getxattr(test / "pax-xattr", "user.pax") == b"value"


def test_ls_a_lists_dot_and_dot_dot_as_a_local_tree_does(mnt: Mount, layered: Layered) -> None:
    """``ls -a`` (and ``ls -ai``: the directory, then its parent) as on the unpacked tree."""
    rootfs = layered.image(mnt, "oci") / "rootfs"
    for where in ("etc", "regfs-test/opaque", "."):
        listed = subprocess.run(["ls", "-a", where], cwd=rootfs, capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
        local = subprocess.run(["ls", "-a", where], cwd=layered.oracle_rootfs,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert listed == local, where
    numbers = subprocess.run(["ls", "-aif", "regfs-test/opaque"], cwd=rootfs, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    assert numbers[:4] == [str(os.stat(rootfs / "regfs-test/opaque").st_ino), ".",
                           str(os.stat(rootfs / "regfs-test").st_ino), ".."]  # fmt: skip


def test_overlay_of_layer_dirs_equals_rootfs(mnt: Mount, layered: Layered, tmp_path: Path) -> None:
    image = layered.image(mnt, "oci")
    target = tmp_path / "overlay"
    target.mkdir()
    # relative lowerdirs: a ':' in the host name would split an absolute path
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=3:2:1:0", str(target)],
        cwd=image, check=True,
    )  # fmt: skip
    try:
        overlay, rootfs = snapshot(target), snapshot(image / "rootfs")
    finally:
        subprocess.run(["umount", str(target)], check=True)

    # overlayfs reports a lower inode's own link count, even where an upper layer
    # replaced one of its names (regfs/hard/b and c): compare everything else
    def without_nlink(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
        return {path: (*value[:7], None, *value[8:]) for path, value in tree.items()}

    found = differences(without_nlink(overlay), without_nlink(rootfs))
    assert not found, "\n".join(found)


def chroot_sh(rootfs: Path, command: str) -> str:
    result = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", command], capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    return result.stdout


def test_chroot_into_rootfs(mnt: Mount, layered: Layered) -> None:
    rootfs = layered.image(mnt, "zstd") / "rootfs"
    command = "dpkg -l | wc -l; cat /etc/issue; ls /regfs-test/small | wc -l"
    assert chroot_sh(rootfs, command) == chroot_sh(layered.oracle_rootfs, command)


def test_systemd_nspawn_runs_a_shell_in_rootfs(mnt: Mount, layered: Layered) -> None:
    rootfs = layered.image(mnt, "oci") / "rootfs"
    result = subprocess.run(
        ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(rootfs),
         "--read-only", "/bin/sh", "-c", "cat /etc/issue; test -x /usr/bin/dpkg && echo ok"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "regfs layered image\nok\n"


def test_allow_other_enforces_the_images_own_modes(layered: Layered) -> None:
    """Another user (nobody) on an ``--allow-other`` mount: 0644 files read, a 0640 root
    file refused by the kernel (``default_permissions``), nothing writable, no setuid."""
    base = Path(tempfile.mkdtemp(prefix="regfs-allow-other-"))  # outside 0700 pytest dirs
    base.chmod(0o755)
    mount = Mount(base / "mnt", "--allow-other")
    try:
        rootfs = layered.image(mount, "oci") / "rootfs"
        assert (rootfs / "etc/shadow").stat().st_mode & 0o777 == 0o640  # root:shadow

        def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip

        assert as_nobody("cat", str(rootfs / "etc/os-release")).returncode == 0
        refused = as_nobody("cat", str(rootfs / "etc/shadow"))
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        written = as_nobody("touch", str(rootfs / "tmp/x"))
        assert written.returncode != 0 and "Read-only file system" in written.stderr
        options = next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                       if f" {mount.path} " in line)  # fmt: skip
        assert "nosuid" in options and "nodev" in options
    finally:
        mount.close()
        unexpected = mount.unexpected_log_lines()  # checked here: the log goes with base
        shutil.rmtree(base, ignore_errors=True)
    assert not unexpected
