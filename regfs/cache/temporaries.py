"""Temporary files of the cache dir: whose they are, and when they may be removed.

Cache layer. Every temporary is named ``….PID.TOKEN[.tmp]`` by the process writing it.
One whose process is gone (a daemon killed mid-layer) is removed at once; one whose pid
looks alive is still removed once it is old, since pids are reused and a cache dir may
be shared with another machine's processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path

from regfs.cache import locks
from regfs.cache.layout import CacheLayout

STALE_SECONDS = 3600
_OWNER = re.compile(r"\.(\d+)\.[0-9a-f]{8}(?:\.tmp)?")


def owner_is_gone(name: str) -> bool:
    """True if ``name`` carries the pid of a process that no longer exists here."""
    match = _OWNER.search(name)
    if match is None or not match.string.endswith(match.group(0)):
        return False
    pid = int(match.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return _is_zombie(pid)  # killed, but not reaped (as in containers without an init)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_abandoned(path: Path, mtime: float, now: float) -> bool:
    """True for a temporary nobody will finish: its writer is gone, or it is old."""
    return owner_is_gone(path.name) or now - mtime > STALE_SECONDS


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Publish ``data`` at ``path`` whole or not at all: written to a temporary named as
    above, fsynced (unless not ``durable``: a record whose reader checks it, and which may
    be lost), renamed into place (its directory made if missing)."""
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_abandoned(directory: Path, prefix: str = "") -> None:
    """Delete what a killed daemon left half-written; another mount's live files stay."""
    now = time.time()
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another mount may be cleaning too
            if path.name.startswith(prefix) and is_abandoned(path, path.stat().st_mtime, now):
                path.unlink(missing_ok=True)


def ready_for_layers(layout: CacheLayout) -> None:
    """Make the dirs a layer store writes in, and clear what killed writers left there:
    half-written temporaries and indexes, and locks nobody holds."""
    for directory in (layout.indexes, layout.temporary, layout.locks):
        directory.mkdir(parents=True, exist_ok=True)
    remove_abandoned(layout.temporary)
    remove_abandoned(layout.indexes, prefix=".")
    locks.sweep(layout.locks)
