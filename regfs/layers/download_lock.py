"""One process at a time downloads a layer into a shared cache dir; the others wait for it.

Layers layer. Two mounts, or a mount and a ``regfs prefetch``, on one cache dir take turns
through a lock file per layer (``regfs.cache.locks``); the kernel drops a dead process's
lock. The process that waits sees the other's download land in ``tmp/`` (the blob's file
there is named ``<hex>.<pid>.<token>``), and that is what its deadline follows:

- each growth of that file is the waiting request's progress (``progressed``), so a
  request may wait as long as the download keeps coming, as it may for one of its own
  mount (an 80 MB layer at 20 Mbit/s takes 32 s, past the default ``--timeout``);
- a holder that sends nothing for ``--timeout`` (stopped, or stalled on its registry)
  makes the request fail with a line naming that process, not "no answer": the request
  waiting here, or waiting for the work that waits here (``blocked_on``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from regfs.cache import locks
from regfs.registry.request_deadline import blocked_on, progressed

POLL_LIMIT = 0.5
"""Longest pause between two tries of the lock (they start at 10 ms and double): the
delay a reader adds to another process's download of its layer, at most."""


@contextlib.asynccontextmanager
async def file_lock(path: Path, what: str = "", landing: Path | None = None) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path``, waited for without blocking the event loop; the
    file is removed with the lock (see ``regfs.cache.locks``). ``landing``: where a
    holder's download lands (``tmp/<hex>``, to which it adds ``.<pid>.<token>``), watched
    for progress; ``what`` names the layer in the error a holder's stall makes."""
    watched = Landing(landing)
    delay = 0.01
    with blocked_on(lambda: watched.stalled(what, path)):
        while (descriptor := locks.try_lock(path)) is None:
            await trio.sleep(delay)
            delay = min(delay * 2, POLL_LIMIT)
            if watched.grew():
                progressed()
    try:
        yield
    finally:
        locks.release(descriptor, path)


class Landing:
    """The files another process downloads a blob into (``<prefix>.<pid>.<token>``):
    whether they grew since last asked, and since when they have not."""

    def __init__(self, prefix: Path | None) -> None:
        self._prefix = prefix
        self._sizes: dict[str, int] = {}
        self._since = trio.current_time()

    def grew(self) -> bool:
        sizes = self._landing()
        grown = any(size > self._sizes.get(name, 0) for name, size in sizes.items())
        self._sizes = sizes
        if grown:
            self._since = trio.current_time()
        return grown

    def stalled(self, what: str, lock: Path) -> str:
        waited = round(trio.current_time() - self._since, 1)
        holders = sorted({name.split(".")[1] for name in self._sizes})
        if holders:
            holder = f"process {', '.join(holders)} on this cache dir is downloading it"
        else:
            holder = f"another process on this cache dir holds {lock}"
        return f"{what}: {holder}, with no progress for {waited:g}s (the request's --timeout)"

    def _landing(self) -> dict[str, int]:
        if self._prefix is None:
            return {}
        start = self._prefix.name + "."
        sizes = {}
        try:
            with os.scandir(self._prefix.parent) as entries:
                for entry in entries:
                    if entry.name.startswith(start):
                        with contextlib.suppress(FileNotFoundError):  # done meanwhile
                            sizes[entry.name] = entry.stat().st_size
        except FileNotFoundError:
            pass
        return sizes
