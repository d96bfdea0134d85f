"""The cache dir's ``locks/``: a lock file per layer being downloaded, and no more.

Cache layer: imports nothing from regfs above it. A process about to download a layer's
blob for its first pass takes an exclusive ``flock`` on ``locks/<layer>.lock`` (the layer
store polls ``try_lock``), so two mounts or a ``regfs prefetch`` on one cache dir never
download the same layer at once; the kernel drops a dead process's lock. A lock file is
needed only while someone holds it: the holder removes it when done (``release``), and
``sweep`` removes what a killed process left, at startup. (Before, ``locks/`` gained a
file per layer ever fetched and never lost one.)

Why removing a lock file is safe. Taking a lock (``_lock``) is an ``flock`` without
waiting that counts only if the path still names the file locked (same device and
inode as the descriptor's; that inode cannot be reused while the descriptor is open).
A path is unlinked only by whoever holds the lock of the file it names, before letting
the lock go: the holder in ``release``, or ``sweep`` once it took an unheld one. So:

- The holder is never swept: a sweep cannot take a held lock, and no one else unlinks.
- A taker that opened the file before it was unlinked, and locks it afterwards, finds
  the path gone or naming a newer file, and opens the path again (``O_CREAT``): the file
  it locked is no longer anyone's meeting point, so that lock means nothing.
- A sweep that opened a file someone then unlinked (its holder, or another sweep) finds
  the path gone or naming another file than the one it locked, and leaves the path
  alone. ``O_CREAT`` never replaces an existing file, so while one holds the lock of the
  file a path names, the path keeps naming it until that one unlinks it.
- ``release`` unlinks before it closes: closed first, the lock could pass to a taker
  that opened the file earlier and still finds it at the path, and then be unlinked
  under that taker.

So at any time at most one process holds the lock of the file ``locks/<layer>.lock``
names, which is all the downloads rely on. An older regfs (no identity check) sharing the
cache dir can be fooled into downloading a layer a second time; nothing worse.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def try_lock(path: Path) -> int | None:
    """The descriptor holding the exclusive lock of ``path`` (created if need be), or
    None if someone holds it (or just removed it): try again later. Give it back with
    ``release``."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if _lock(descriptor, path):
        return descriptor
    os.close(descriptor)
    return None


def release(descriptor: int, path: Path) -> bool:
    """Remove the lock file ``try_lock`` locked, then the lock (in that order: see the
    module docstring); whether the file could be removed."""
    try:
        path.unlink()
    except OSError as error:  # a cache dir shared with a user who may not write here
        log.info("lock file %s left in place: %s", path, error.strerror or error)
        return False
    finally:
        os.close(descriptor)
    return True


def _lock(descriptor: int, path: Path) -> bool:
    """Lock ``descriptor`` without waiting; True only if that succeeded while ``path``
    still names its file. On False the caller closes it (which drops any lock taken)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    locked = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (locked.st_dev, locked.st_ino)


def sweep(lock_dir: Path) -> int:
    """Remove the lock files no process holds (left by killed processes, or by a regfs
    that kept them all); how many were removed."""
    try:
        names = [entry.name for entry in os.scandir(lock_dir)]
    except FileNotFoundError:
        return 0
    return sum(_remove_if_unheld(lock_dir / name) for name in names)


def _remove_if_unheld(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # released or swept meanwhile
    except OSError as error:
        log.info("lock file %s left in place: %s", path, error.strerror or error)
        return False
    if not _lock(descriptor, path):
        os.close(descriptor)
        return False
    return release(descriptor, path)
