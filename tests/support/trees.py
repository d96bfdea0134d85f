"""Snapshots of a directory tree as plain values, to compare what regfs shows with oracles."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _xattrs(path: str, is_link: bool) -> dict[str, bytes]:
    if is_link:
        return {}  # Linux refuses user.* xattrs on symlinks
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in sorted(names)}


def _digest(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def snapshot(
    root: Path, mtimes: bool = True, dir_mtimes: bool = False
) -> dict[str, tuple[object, ...]]:
    """path → (type, mode, uid, gid, size, target/digest, rdev, nlink, xattrs, mtime)."""
    result: dict[str, tuple[object, ...]] = {}
    pending = [str(root)]
    while pending:
        directory = pending.pop()
        for entry in os.scandir(directory):
            info = entry.stat(follow_symlinks=False)
            kind = stat.S_IFMT(info.st_mode)
            relative = os.path.relpath(entry.path, root)
            if kind == stat.S_IFDIR:
                pending.append(entry.path)
            content: object = None
            if kind == stat.S_IFREG:
                content = _digest(entry.path)
            elif kind == stat.S_IFLNK:
                content = os.readlink(entry.path)
            is_device = kind in (stat.S_IFCHR, stat.S_IFBLK)
            show_mtime = mtimes and (kind != stat.S_IFDIR or dir_mtimes)
            result[relative] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                info.st_size if kind in (stat.S_IFREG, stat.S_IFLNK) else None,
                content,
                info.st_rdev if is_device else None,
                info.st_nlink if kind == stat.S_IFREG else None,
                tuple(_xattrs(entry.path, kind == stat.S_IFLNK).items()),
                info.st_mtime_ns // 1_000_000_000 if show_mtime else None,
            )
    return result


def root_of(root: Path, mtime: bool = True) -> tuple[object, ...]:
    """The attributes of a tree's top dir itself: (mode, uid, gid, xattrs, mtime), as
    ``tar -x`` sets them from a layer's ``./`` entry (regfs's own ``user.regfs.*``, which
    a layer dir lists, left out)."""
    info = os.stat(root)
    xattrs = _xattrs(str(root), False).items()
    return (
        oct(stat.S_IMODE(info.st_mode)),
        info.st_uid,
        info.st_gid,
        tuple((name, value) for name, value in xattrs if not name.startswith("user.regfs.")),
        info.st_mtime_ns // 1_000_000_000 if mtime else None,
    )


def differences(
    actual: dict[str, tuple[object, ...]], expected: dict[str, tuple[object, ...]], limit: int = 20
) -> list[str]:
    """Human-readable differences, at most ``limit``."""
    lines = []
    for path in sorted(set(actual) | set(expected)):
        if actual.get(path) != expected.get(path):
            lines.append(f"{path}:\n   regfs:  {actual.get(path)}\n   oracle: {expected.get(path)}")
            if len(lines) >= limit:
                break
    return lines


def extract_layer(blob: Path, target: Path) -> None:
    """GNU tar's view of one layer blob, whiteouts turned to overlay form, as an oracle."""
    import subprocess

    target.mkdir(parents=True)
    subprocess.run(
        ["tar", "-x", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p",
         "-f", str(blob), "-C", str(target)],
        check=False, capture_output=True,  # members below a non-directory fail, as they should
    )  # fmt: skip
    for directory, _, names in os.walk(target):
        for name in names:
            if not name.startswith(".wh."):
                continue
            marker = os.path.join(directory, name)
            if name == ".wh..wh..opq":
                os.setxattr(directory, "trusted.overlay.opaque", b"y")
            else:
                info = os.lstat(marker)
                device = os.path.join(directory, name[4:])
                os.mknod(device, stat.S_IFCHR | stat.S_IMODE(info.st_mode), os.makedev(0, 0))
                os.chown(device, info.st_uid, info.st_gid)
                os.utime(device, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.unlink(marker)
