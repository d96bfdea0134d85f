"""regfs as the system mounts it: ``mount -t fuse.regfs`` (the ``mount.fuse.regfs`` helper
the wheel installs), an fstab line, and the units in ``contrib/`` run as systemd would run
them (these machines have no systemd as PID 1: the service's command is started with a
``NOTIFY_SOCKET`` the test listens on, the mount unit's fields are given to mount(8))."""

from __future__ import annotations

import configparser
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Pushed
from tests.support.mount import Installation, Mount, clean_environment, run_regfs

pytestmark = pytest.mark.mount

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
HELPER = Path("/sbin/mount.fuse.regfs")


@pytest.fixture(scope="module")
def helper() -> Iterator[Path]:
    """``/sbin/mount.fuse.regfs`` pointing at the installation under test while it runs."""
    before = os.readlink(HELPER) if HELPER.is_symlink() else None
    assert before is not None or not HELPER.exists(), f"{HELPER} is not ours to replace"
    HELPER.unlink(missing_ok=True)
    HELPER.symlink_to(Installation.bin_dir / "mount.fuse.regfs")
    yield HELPER
    HELPER.unlink()
    if before is not None:
        HELPER.symlink_to(before)


def status(mountpoint: Path) -> dict[str, object]:
    shown = run_regfs("status", "--json", str(mountpoint))
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def unmount(mountpoint: Path) -> None:
    subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def test_mount_t_fuse_regfs_takes_regfs_options(
    tmp_path: Path, helper: Path, pushed: Pushed
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    cache = tmp_path / "cache"
    options = f"cache_dir={cache},timeout=7,allow_other,_netdev,nodev,x-systemd.automount"
    subprocess.run(["mount", "-t", "fuse.regfs", "regfs", str(mountpoint), "-o", options],
                   check=True, capture_output=True, env=clean_environment())  # fmt: skip
    try:
        state = status(mountpoint)
        assert state["options"]["timeout"] == 7  # type: ignore[index]
        assert state["options"]["allow_other"] is True  # type: ignore[index]
        assert state["cache"]["dir"] == str(cache)  # type: ignore[index]
        assert "library" in os.listdir(mountpoint / pushed.registry.host)
        assert pushed.registry.host in os.listdir(mountpoint)
    finally:
        unmount(mountpoint)
    assert not os.path.ismount(mountpoint)


def test_an_fstab_line_mounts(tmp_path: Path, helper: Path, pushed: Pushed) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    line = (CONTRIB / "fstab.example").read_text().splitlines()[-1].split()
    assert line[2] == "fuse.regfs"
    options = line[3].replace("/var/cache/regfs", str(tmp_path / "cache"))
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{line[0]} {mountpoint} {line[2]} {options} 0 0\n")
    subprocess.run(["mount", "--fstab", str(fstab), str(mountpoint)], check=True,
                   capture_output=True, env=clean_environment())  # fmt: skip
    try:
        assert "library" in os.listdir(mountpoint / pushed.registry.host)
    finally:
        unmount(mountpoint)


def test_an_unknown_option_stops_the_mount(tmp_path: Path, helper: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    failed = subprocess.run(
        ["mount", "-t", "fuse.regfs", "regfs", str(mountpoint), "-o", "cache_dri=/x"],
        capture_output=True, text=True, env=clean_environment(), check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "unknown regfs mount option 'cache_dri=/x'" in failed.stderr
    assert not os.path.ismount(mountpoint)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / name)
    return parser


def test_the_mount_unit_mounts_as_systemd_would(
    tmp_path: Path, helper: Path, pushed: Pushed
) -> None:
    fields = unit("mnt-reg.mount")["Mount"]
    assert fields["Where"] == "/mnt/reg" and fields["Type"] == "fuse.regfs"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = fields["Options"].replace("/var/cache/regfs", str(tmp_path / "cache"))
    subprocess.run(["mount", "-t", fields["Type"], fields["What"], str(mountpoint), "-o",
                    options], check=True, capture_output=True, env=clean_environment())  # fmt: skip
    try:
        assert "library" in os.listdir(mountpoint / pushed.registry.host)
    finally:
        unmount(mountpoint)


def service_commands(key: str, mountpoint: Path, cache: Path) -> list[list[str]]:
    """The service's ``key`` commands (``ExecStartPre``, ``ExecStart``), in order, as they
    run here: the installation under test, ``mountpoint`` and ``cache`` for its paths; a
    command whose failure systemd ignores (``-``) is marked by a leading ``-``."""
    commands = []
    for line in (CONTRIB / "regfs.service").read_text().splitlines():
        name, _, value = line.partition("=")
        if name != key:
            continue
        words = value.split()
        ignored, program = words[0].startswith("-"), words[0].lstrip("-")
        if program == "/usr/local/bin/regfs":
            program = str(Installation.regfs())
        words = [program, *words[1:]]
        words = [{"/mnt/reg": str(mountpoint), "/var/cache/regfs": str(cache)}.get(w, w)
                 for w in words]  # fmt: skip
        commands.append(["-", *words] if ignored else words)
    return commands


def test_the_service_says_ready_once_the_mount_is_live_and_unmounts_on_stop(
    tmp_path: Path, pushed: Pushed
) -> None:
    service = unit("regfs.service")["Service"]
    assert service["Type"] == "notify"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (command,) = service_commands("ExecStart", mountpoint, tmp_path / "cache")
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(30)
        process = subprocess.Popen(command, env={**clean_environment(),
                                                 "NOTIFY_SOCKET": str(notify)},
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert listener.recv(100) == b"READY=1"
            assert os.path.ismount(mountpoint)
            assert "library" in os.listdir(mountpoint / pushed.registry.host)
            process.send_signal(signal.SIGTERM)  # systemctl stop
            assert listener.recv(100) == b"STOPPING=1"
            _, log = process.communicate(timeout=30)
            assert process.returncode == 0, log
            assert "Traceback" not in log and "WARNING" not in log, log  # the journal's
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
                Mount(mountpoint).close()
    assert not os.path.ismount(mountpoint)
