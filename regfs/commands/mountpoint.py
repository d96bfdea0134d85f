"""Checks on a mountpoint before mounting, and finding mounts in ``/proc/self/mountinfo``.

Application layer (``regfs mount``, ``umount`` and ``cache stats``): local filesystem
facts only, no FUSE and no network.
"""

from __future__ import annotations

import errno
import os
import re

FUSE_DEVICE = "/dev/fuse"
REGFS_TYPE = "fuse.regfs"
"""The filesystem type of every regfs mount in the mount table (``subtype=regfs``)."""
MOUNTINFO = "/proc/self/mountinfo"


class MountpointError(Exception):
    """Why regfs will not mount (or unmount) here; the message is shown to the user as is."""


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for each line of a mountinfo text."""
    result = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        separator = fields.index("-")
        result.append((_unescape(fields[4]), fields[separator + 1]))
    return result


def canonical(path: str) -> str:
    """``path`` absolute, with its symlinks resolved, as the mount table names a mount
    point, and without a stat of the path itself: that reaches the daemon of a mount
    there, which may answer nothing (stopped). readlink does not: a mount's root is a
    directory, which the kernel refuses to read as a link itself."""
    parent, name = os.path.split(os.path.abspath(path))
    resolved = os.path.join(os.path.realpath(parent), name)
    for _ in range(40):  # the kernel's own bound on links followed (ELOOP)
        try:
            target = os.readlink(resolved)
        except OSError:
            return resolved  # not a link, or nothing there: the caller says which
        parent, name = os.path.split(os.path.join(os.path.dirname(resolved), target))
        resolved = os.path.join(os.path.realpath(parent), name)
    raise MountpointError(f"{path}: too many levels of symbolic links")


def _mount_table() -> list[tuple[str, str]]:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as file:
        return mount_points(file.read())


def mounted_type(path: str) -> str | None:
    """The filesystem type mounted exactly at ``path``, or None if nothing is."""
    matches = [fs_type for point, fs_type in _mount_table() if point == path]
    return matches[-1] if matches else None


def regfs_mounts() -> list[str]:
    """Every regfs mount point of this mount namespace."""
    return [point for point, fs_type in _mount_table() if fs_type == REGFS_TYPE]


def is_dead_mount(path: str) -> bool:
    """True if ``path`` is a FUSE mount whose daemon is gone (stat fails with ENOTCONN)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ENOTCONN
    return False


def check_can_mount(path: str) -> None:
    """Raise ``MountpointError`` unless ``path`` is an empty, unmounted directory."""
    if mounted_type(path) is not None or is_dead_mount(path):  # no stat of a live mount
        raise MountpointError(f"{path} is already a mount point (try: regfs umount {path})")
    if not os.path.exists(path):
        raise MountpointError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise MountpointError(f"mountpoint {path} is not a directory")
    if os.listdir(path):
        raise MountpointError(f"mountpoint {path} is not empty")
    if not os.path.exists(FUSE_DEVICE):
        raise MountpointError(f"{FUSE_DEVICE} does not exist: is the fuse module loaded?")
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        raise MountpointError(f"no permission to open {FUSE_DEVICE}")
