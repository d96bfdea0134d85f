"""``regfs mount`` and ``regfs umount`` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.mount.conftest import Pushed
from tests.support.mount import REGFS, Mount
from tests.support.net import wait_until

pytestmark = pytest.mark.mount


def regfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REGFS), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_mount_refuses_a_missing_mountpoint(tmp_path: Path) -> None:
    result = regfs("mount", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_mount_refuses_a_non_empty_mountpoint(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = regfs("mount", str(tmp_path))
    assert result.returncode == 1
    assert "is not empty" in result.stderr


def test_mount_refuses_an_existing_mount(mnt: Mount) -> None:
    result = regfs("mount", str(mnt.path))
    assert result.returncode == 1
    assert "already a mount point" in result.stderr


def test_umount_refuses_what_is_not_mounted(tmp_path: Path) -> None:
    result = regfs("umount", str(tmp_path))
    assert result.returncode == 1
    assert "is not mounted" in result.stderr


def test_mount_returns_when_live_and_umount_ends_the_daemon(tmp_path: Path, pushed: Pushed) -> None:
    mount = Mount(tmp_path / "mnt")
    assert os.path.ismount(mount.path)  # live as soon as `regfs mount` returned
    assert os.listdir(mount / pushed.registry.host / "nested/a/b/c") == ["1"]
    assert regfs("umount", str(mount.path)).returncode == 0
    assert not os.path.ismount(mount.path)
    assert "unmounted" in mount.log()


def test_umount_clears_a_dead_mount(tmp_path: Path) -> None:
    mount = Mount(tmp_path / "mnt")
    pid = int(mount.log().split()[2])  # the daemon's pid, logged with every line
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), 10, f"daemon {pid} to die")
    with pytest.raises(OSError):
        os.listdir(mount.path)  # ENOTCONN: the daemon is gone
    result = regfs("umount", str(mount.path))
    assert result.returncode == 0, result.stderr
    assert os.listdir(mount.path) == []


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: nobody may reap it in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
