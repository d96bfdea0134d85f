from __future__ import annotations

from pathlib import Path

import pytest

from regfs.commands.mountpoint import MountpointError, canonical, check_can_mount, mount_points

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:50 - fuse.regfs regfs ro,user_id=0
99 22 0:53 / /proc rw - proc proc rw
broken line
"""


def test_mount_points_unescape_and_type() -> None:
    assert mount_points(MOUNTINFO) == [
        ("/", "ext4"), ("/tmp/my mnt", "fuse.regfs"), ("/proc", "proc")]  # fmt: skip


def test_check_can_mount(tmp_path: Path) -> None:
    with pytest.raises(MountpointError, match="does not exist"):
        check_can_mount(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(MountpointError, match="not a directory"):
        check_can_mount(str(tmp_path / "file"))
    with pytest.raises(MountpointError, match="not empty"):
        check_can_mount(str(tmp_path))


def test_check_can_mount_needs_the_fuse_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("regfs.commands.mountpoint.FUSE_DEVICE", str(tmp_path / "no-fuse"))
    (tmp_path / "mnt").mkdir()
    with pytest.raises(MountpointError, match="no-fuse does not exist"):
        check_can_mount(str(tmp_path / "mnt"))


def test_canonical_resolves_links_as_the_mount_table_names_points(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "chain").symlink_to(tmp_path / "link")
    (tmp_path / "in_link").symlink_to(".")
    (tmp_path / "loop").symlink_to("loop")
    real = str(tmp_path / "real")
    assert canonical(str(tmp_path / "link")) == real
    assert canonical(str(tmp_path / "chain")) == real
    assert canonical(str(tmp_path / "in_link" / "link")) == real
    assert canonical(str(tmp_path / "missing")) == str(tmp_path / "missing")
    with pytest.raises(MountpointError, match="too many levels"):
        canonical(str(tmp_path / "loop"))
