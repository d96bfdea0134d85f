"""The cache dir as a trust boundary: made private, refused when others can write it.

Cache layer. What is in the cache dir is the root of every later read of a layer (its
index says where each file's bytes are), so a cache dir that another user can write is
a way to change what every mount on it shows. As ssh refuses a key file others can
write, regfs refuses such a cache dir unless the user shares it on purpose
(``--allow-shared-cache``). A new cache dir is made readable by its owner only, and the
daemon creates its files with umask 077.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from regfs.cache.layout import CacheLayout

PRIVATE_UMASK = 0o077


class UnsafeCacheDir(Exception):
    """The cache dir (or a part of it) can be written by someone other than its user."""


def prepare_cache_dir(path: Path, *, allow_shared: bool, writing: bool = True) -> None:
    """Create ``path`` (mode 0700) if missing; unless ``allow_shared``, refuse it if it or
    one of its parts is owned by another user (root excepted) or writable by group or
    others, and have the process create files for its user only. One that cannot be
    made (on a read-only file system) is said as one that cannot be written."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            error.errno, f"cache dir {path} cannot be written: {error.strerror}"
        ) from None
    if writing:
        _check_writable(path)
    if allow_shared:
        return
    parts = CacheLayout(path).parts().values()  # each checked like the dir itself
    for directory in (path.resolve(), *parts):
        problem = unsafe_because(directory, os.geteuid())
        if problem is not None:
            raise UnsafeCacheDir(
                f"cache dir {directory} {problem}: others could change what mounts show "
                f"(chmod go-w it, or pass --allow-shared-cache to share it on purpose)"
            )
    os.umask(PRIVATE_UMASK)


def _check_writable(path: Path) -> None:
    """Raise ``OSError`` saying so if no file can be made in ``path`` (a read-only file
    system, a full disk): every byte regfs verifies is kept there, and a mount that cannot
    keep any would answer every lookup with EIO."""
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
    except OSError as error:
        why = f"cache dir {path} cannot be written: {error.strerror}"
        raise OSError(error.errno, why) from None
    os.close(descriptor)
    os.unlink(probe)


def unsafe_because(path: Path, user: int) -> str | None:
    """Why ``path`` is not safe for ``user`` to trust, or None (also when it is absent).
    A symbolic link is refused (whoever can write its dir can point it elsewhere): pass
    the cache dir itself resolved."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if info.st_uid not in (user, 0):
        return f"is owned by uid {info.st_uid}"
    writers = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
               if info.st_mode & bit]  # fmt: skip
    return f"is writable by {' and '.join(writers)}" if writers else None
