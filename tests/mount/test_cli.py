"""``regfs mount`` and ``regfs umount`` as a user runs them."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from pathlib import Path

import pytest

from regfs.commands.mountpoint import mounted_type
from tests.mount.conftest import Pushed
from tests.support.installed import ROOT, clean_environment
from tests.support.mount import Installation, Mount, run_regfs
from tests.support.net import wait_until

pytestmark = pytest.mark.mount
regfs = run_regfs


def test_the_tests_run_regfs_installed_from_a_wheel(installed_regfs: Path) -> None:
    assert Installation.regfs() == installed_regfs / "regfs"
    probe = subprocess.run(
        [installed_regfs / "python", "-c", "import regfs; print(regfs.__file__)"],
        capture_output=True, text=True, check=True, cwd="/", env=clean_environment(),
    )  # fmt: skip
    module = Path(probe.stdout.strip())
    assert "site-packages" in module.parts and ROOT not in module.parents


def test_the_wheel_ships_the_layer_index_schema(installed_regfs: Path) -> None:
    check = ("from importlib.resources import files; "
             "print(files('regfs.layers.index') / 'schema.sql')")  # fmt: skip
    probe = subprocess.run([installed_regfs / "python", "-c", check], cwd="/",
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert "CREATE TABLE" in Path(probe.stdout.strip()).read_text()


def test_df_counts_no_inodes_used_on_a_browse_or_a_store_mount(mnt: Mount, tmp_path: Path) -> None:
    """A count with none free read as 100 % used: monitoring alerts on a writable mount."""
    store = Mount(tmp_path / "store", "--layer-store")
    try:
        for mount in (mnt, store):
            os.listdir(mount.path)
            status = os.statvfs(mount.path)
            assert (status.f_files, status.f_ffree, status.f_blocks) == (0, 0, 0)
            shown = subprocess.run(["df", "--output=iused,ipcent", str(mount.path)],
                                   capture_output=True, text=True, check=True).stdout  # fmt: skip
            assert shown.split()[-2:] == ["0", "-"], shown
    finally:
        store.close()


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


@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_mount_says_why_fuse_refused_it(tmp_path: Path, foreground: bool) -> None:
    """Without CAP_SYS_ADMIN (as in a container without it, or a user without /dev/fuse)
    fusermount3 refuses the mount: the one line on stderr says what it said, with no
    traceback (it said "fuse_session_mount failed" and, with -f, a Python traceback)."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = ("-f",) if foreground else ()
    places = ("--cache-dir", str(tmp_path / "cache"), "--log-file", str(tmp_path / "log"))
    command = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin",
               str(Installation.regfs()), "mount", str(mountpoint), *options, *places]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                            env=clean_environment(), stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 1
    assert not os.path.ismount(mountpoint)
    assert result.stderr.splitlines() == [
        "regfs: cannot mount: fusermount3: mount failed: Operation not permitted"
    ]
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_a_daemon_started_with_relative_paths_holds_no_directory(
    tmp_path: Path, pushed: Pushed
) -> None:
    """A script that mounts from its work dir with relative paths: the daemon leaves that
    dir (it kept it, so unmounting the filesystem under it failed with EBUSY), still
    uses the paths as meant, and ``status --json`` names them absolute (it said
    ``"dir": "cache"``, meaningless to a script elsewhere)."""
    work = tmp_path / "work"
    (work / "mnt").mkdir(parents=True)
    command = [str(Installation.regfs()), "mount", "mnt", "--cache-dir", "cache",
               "--log-file", "regfs.log"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                            env=clean_environment(), cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr
    mount = Mount.adopt(work / "mnt", work / "regfs.log")
    try:
        assert os.listdir(mount / pushed.registry.host / "nested/a/b/c") == ["1"]
        state = json.loads(regfs("status", "--json", str(mount.path)).stdout)
        assert os.readlink(f"/proc/{state['pid']}/cwd") == "/"
        assert state["cache"]["dir"] == str(work / "cache")
        assert (work / "cache").is_dir() and "mounted" in mount.log()
    finally:
        mount.close()


def test_umount_refuses_what_is_not_mounted(tmp_path: Path) -> None:
    result = regfs("umount", str(tmp_path))
    assert result.returncode == 1
    assert "is not mounted" in result.stderr


def test_umount_leaves_what_regfs_did_not_mount(tmp_path: Path) -> None:
    """``regfs umount`` given another filesystem's mountpoint (a wrong variable in a
    script run as root) refuses it: it unmounted anything, a tmpfs here."""
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(other)], check=True)
    try:
        result = regfs("umount", str(other))
        assert result.returncode == 1
        assert result.stderr == f"regfs: {other} is a tmpfs mount, not regfs\n"
        assert os.path.ismount(other)
    finally:
        subprocess.run(["umount", str(other)], check=False)


def test_mount_and_umount_through_a_symlink(tmp_path: Path) -> None:
    """A mountpoint named through a symlink (a work dir under a linked home) is the
    directory it names: a second ``regfs mount`` there is refused and ``regfs umount``
    unmounts it. The mount table names the real path, which they compared with the
    name given: the second mount was stacked on the first and umount said "not
    mounted"."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    Mount(tmp_path / "link")
    try:
        again = regfs("mount", str(tmp_path / "link"), "--cache-dir", str(tmp_path / "c"))
        assert again.returncode == 1
        assert "already a mount point" in again.stderr
        result = regfs("umount", str(tmp_path / "link"))
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(tmp_path / "real")
    finally:
        while os.path.ismount(tmp_path / "real"):
            subprocess.run(["fusermount3", "-u", str(tmp_path / "real")], check=True)


def test_the_daemon_keeps_no_descriptor_of_its_caller(tmp_path: Path) -> None:
    """A pipe the caller left open in ``regfs mount`` (a script's ``exec 3>&1`` inside
    ``$(…)``, a CI runner's log pipe) is not held by the daemon: the reader sees its end
    once ``regfs mount`` returned. The daemon kept it, so ``$(…)`` waited until unmount."""
    read_end, write_end = os.pipe()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    places = ("--cache-dir", str(tmp_path / "cache"), "--log-file", str(tmp_path / "log"))
    command = [str(Installation.regfs()), "mount", str(mountpoint), *places]
    mounted = subprocess.run(command, pass_fds=(write_end,), env=clean_environment(),
                             capture_output=True, check=False, timeout=30)  # fmt: skip
    os.close(write_end)
    mount = Mount.adopt(mountpoint, tmp_path / "log")
    try:
        assert mounted.returncode == 0, mounted.stderr
        assert select.select([read_end], [], [], 10)[0] == [read_end]
        assert os.read(read_end, 1) == b""  # the end: no writer is left
    finally:
        os.close(read_end)
        mount.close()


def test_mount_returns_when_live_and_umount_ends_the_daemon(tmp_path: Path, pushed: Pushed) -> None:
    mount = Mount(tmp_path / "mnt")
    assert os.path.ismount(mount.path)  # live as soon as `regfs mount` returned
    assert os.listdir(mount / pushed.registry.host / "nested/a/b/c") == ["1"]
    assert regfs("umount", str(mount.path)).returncode == 0
    assert not os.path.ismount(mount.path)
    assert "unmounted" in mount.log()


def test_umount_clears_a_dead_mount(tmp_path: Path) -> None:
    mount = Mount(tmp_path / "mnt")
    pid = mount.pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), 10, f"daemon {pid} to die")
    with pytest.raises(OSError):
        os.listdir(mount.path)  # ENOTCONN: the daemon is gone
    result = regfs("umount", str(mount.path))
    assert result.returncode == 0, result.stderr
    assert os.listdir(mount.path) == []


def test_a_stopped_daemon_hangs_no_command(tmp_path: Path) -> None:
    """A daemon that answers nothing (stopped, as by SIGSTOP or a debugger): ``regfs
    status`` says so within its wait, ``cache stats`` leaves that mount out, ``umount``
    unmounts it at once. All three hung for good (``umount`` stat'ed the mountpoint
    first, the others waited for the daemon's answer)."""
    mount = Mount(tmp_path / "mnt")
    pid = mount.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        status = regfs("status", str(mount.path), timeout=60)
        assert status.returncode == 1
        assert "no answer within" in status.stderr
        cache = str(tmp_path / "mnt.cache")
        assert regfs("cache", "stats", "--cache-dir", cache, timeout=60).returncode == 0
        unmounted = regfs("umount", str(mount.path), timeout=60)
        assert unmounted.returncode == 0, unmounted.stderr
        assert not os.path.ismount(mount.path)
    finally:
        os.kill(pid, signal.SIGCONT)
        if mounted_type(str(mount.path)) is not None:  # a command failed before unmounting
            subprocess.run(["fusermount3", "-u", str(mount.path)], check=False)
    wait_until(lambda: _gone(pid), 10, f"daemon {pid} to end")
    assert mounted_type(str(mount.path)) is None


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: nobody may reap it in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_debug_logs_every_request(tmp_path: Path, pushed: Pushed) -> None:
    mount = Mount(tmp_path / "mnt", "--debug")
    try:
        host = pushed.registry.host
        assert os.listdir(mount / host / "nested/a/b/c") == ["1"]
        os.readlink(mount / host / "nested/a/b/c/1")
        log = mount.log()
    finally:
        mount.close()
    assert f"DEBUG regfs.fuse: lookup(1, '{host}')" in log
    for request in ("readdir(", "readlink("):  # no opendir: the kernel skips it
        assert f"DEBUG regfs.fuse: {request}" in log, request


def test_a_missing_name_in_an_image_is_asked_of_the_daemon_once(
    tmp_path: Path, pushed: Pushed
) -> None:
    """Negative entries under a digest dir are cached by the kernel: they cannot change.
    Names below a repository may appear with the next push, so those are asked again."""
    mount = Mount(tmp_path / "mnt", "--debug")
    try:
        image = mount / pushed.registry.host / "library/debian/bookworm"
        for _ in range(3):
            for missing in ("0/no-such-file", "rootfs/etc/no-such-file", "no-such-entry"):
                assert not (image / missing).exists()
            assert not (mount / pushed.registry.host / "library/no-such-repo").exists()
        log = mount.log()
    finally:
        mount.close()
    assert log.count("'no-such-file')") == 2  # once in 0/, once in rootfs/etc/
    assert log.count("'no-such-entry')") == 1
    assert log.count("'no-such-repo')") == 3


def test_the_bash_completion_completes_commands_and_options(installed_regfs: Path) -> None:
    script = regfs("completion", "bash").stdout
    probe = (
        "source /dev/stdin; for w in 'regfs ca' 'regfs cache p' 'regfs cache un' "
        "'regfs mount --cache-d' "
        "'regfs index push --sp'; do COMP_WORDS=($w); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); "
        '_regfs; echo "${COMPREPLY[*]}"; done'
    )
    shown = subprocess.run(["bash", "-c", probe], input=script, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert shown.stdout.splitlines() == [
        "cache", "prune pin", "unpin", "--cache-dir", "--span-size"
    ]  # fmt: skip


def test_the_wheel_ships_the_man_page_and_man_finds_it(installed_regfs: Path) -> None:
    """pip and pipx users get ``man regfs``: the wheel installs share/man/man1/regfs.1,
    which man finds beside the venv's bin/ on the PATH, and renders without a warning."""
    shipped = installed_regfs.parent / "share/man/man1/regfs.1"
    page = shipped.read_text()
    for command in ("mount", "umount", "prefetch", "status", "cache prune", "cache pin",
                    "cache unpin", "index push"):  # fmt: skip
        assert f'.SS "regfs {command}"' in page
    environment = {**clean_environment(), "MANWIDTH": "80",
                   "PATH": f"{installed_regfs}:/usr/bin:/bin"}  # fmt: skip
    environment.pop("MANPATH", None)
    found = subprocess.run(["man", "-w", "regfs"], capture_output=True, text=True,
                           check=True, env=environment)  # fmt: skip
    assert Path(found.stdout.strip()) == shipped
    for command in (["man", "--warnings", "-l", str(shipped)], ["man", "--warnings", "regfs"]):
        shown = subprocess.run(command, capture_output=True, text=True, check=True,
                               env=environment)  # fmt: skip
        assert shown.stderr == "", shown.stderr
        assert "\\-\\-cache\\-dir" not in shown.stdout and "--cache-dir" in shown.stdout
