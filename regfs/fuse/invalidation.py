"""Telling the kernel to forget what it caches of a mutable entry once its TTL has passed.

FUSE layer. With pyfuse3's kernel-caching patch the kernel keeps directory listings and
symlink targets until told otherwise; an entry timeout alone does not expire them. A
repository's tags, a host's repositories and a tag's target change on the registry, so
each listing or target of a mutable entry handed to the kernel is followed, after
``--metadata-ttl``, by an ``invalidate_inode``: the next ``ls`` or ``readlink`` then
reaches the daemon, which asks the registry again, as without the kernel's cache.
"""

from __future__ import annotations

import errno
import heapq
import logging
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

Invalidate = Callable[[int], None]
"""Drops the kernel's cached data and attributes of one inode (blocking)."""
Changed = Callable[[int], None]
"""Called on the loop for an inode about to be invalidated."""


class KernelInvalidator:
    """Invalidates each scheduled inode once, when it is due.

    An inode already waiting keeps its earlier time: what the kernel cached first expires
    first, and a busy directory costs one invalidation per TTL, not one per listing.
    """

    def __init__(self, invalidate: Invalidate, changed: Changed = lambda inode: None) -> None:
        """``changed`` lets the owner mark the inode changed first: the kernel keeps an
        empty directory listing through an invalidation, and drops it only when the
        directory's mtime has changed (Linux 6.x, ``fuse_readdir_cached``)."""
        self._invalidate = invalidate
        self._changed = changed
        self._due: list[tuple[float, int]] = []
        self._waiting: set[int] = set()
        self._wake = trio.Event()

    def schedule(self, inode: int, delay: float) -> None:
        """Invalidate ``inode`` ``delay`` seconds from now (trio's clock), unless it waits."""
        if inode in self._waiting:
            return
        self._waiting.add(inode)
        heapq.heappush(self._due, (trio.current_time() + delay, inode))
        self._wake.set()

    async def now(self, inode: int) -> None:
        """Invalidate ``inode`` before returning (from a worker thread, as in ``run``)."""
        await self._mark_and_invalidate([inode])

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def run(self) -> None:
        """Invalidate what is due, for ever (until cancelled)."""
        while True:
            if not self._due:
                await self._wake.wait()
            else:
                with trio.move_on_at(self._due[0][0]):
                    await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            inodes = []
            while self._due and self._due[0][0] <= now:
                _, inode = heapq.heappop(self._due)
                self._waiting.discard(inode)
                inodes.append(inode)
            if inodes:
                await self._mark_and_invalidate(inodes)

    async def _mark_and_invalidate(self, inodes: list[int]) -> None:
        for inode in inodes:
            self._changed(inode)
        await self._invalidate_in_thread(inodes)

    async def _invalidate_in_thread(self, inodes: list[int]) -> None:
        """A notification blocks until the kernel has handled it: a worker thread, so
        requests keep being served meanwhile (the kernel may wait on one)."""
        await trio.to_thread.run_sync(self._invalidate_all, inodes)

    def _invalidate_all(self, inodes: list[int]) -> None:
        for inode in inodes:
            try:
                self._invalidate(inode)
            except OSError as error:
                if error.errno != errno.ENOENT:  # ENOENT: the kernel has forgotten it
                    log.warning("cannot invalidate inode %d in the kernel: %s", inode, error)
