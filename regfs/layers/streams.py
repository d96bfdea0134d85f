"""Range requests a mount has on the wire at once, most urgent first.

Layers layer. On a link tens of milliseconds away a cold read is a chain of round trips;
requests that can go together go in parallel streams (connections). What a reader waits
for comes first; read-ahead of a sequential reader next; the eStargz prefetch list and the
background fetch of a layer's rest last, and never on more than ``BACKGROUND_STREAMS`` at
once, so that a reader's request always finds a stream free soon.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum

import trio

STREAMS = 8
"""Range requests on the wire at once, for the whole mount."""
BACKGROUND_STREAMS = 2
"""Of which fetches nobody waits for (prefetch, a layer's rest) take at most this many."""


class Priority(IntEnum):
    """How urgent a fetch is: lower goes first."""

    WAITED = 0
    """A reader waits for it."""
    AHEAD = 1
    """Read-ahead of a sequential reader: it will wait for it soon."""
    BACKGROUND = 2
    """Nobody waits for it yet: an eStargz prefetch list, the rest of a layer."""


class _Waiter:
    __slots__ = ("cancelled", "granted", "priority", "woken")

    def __init__(self, priority: Priority) -> None:
        self.priority = priority
        self.woken = trio.Event()
        self.granted = False
        self.cancelled = False


class Streams:
    """A limiter of ``total`` slots that grants freed slots to the most urgent waiter
    (in order of arrival among equals), background ones within ``background`` slots."""

    def __init__(self, total: int = STREAMS, background: int = BACKGROUND_STREAMS) -> None:
        self._total = self._free = total
        self._background_cap = background
        self._background_busy = 0
        self._waiting: list[tuple[int, int, _Waiter]] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        """Hold one slot for the body (a Range request)."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release(priority)

    def busy(self) -> int:
        """Slots held now (for statistics and tests)."""
        return self._total - self._free

    async def _acquire(self, priority: Priority) -> None:
        first_waiting = self._waiting[0][0] if self._waiting else None
        if self._may_take(priority) and (first_waiting is None or first_waiting > priority):
            self._take(priority)
            await trio.lowlevel.checkpoint()
            return
        waiter = _Waiter(priority)
        heapq.heappush(self._waiting, (priority, next(self._arrivals), waiter))
        try:
            await waiter.woken.wait()
        except BaseException:
            if waiter.granted:  # granted at the moment it was cancelled: hand it on
                self._release(priority)
            waiter.cancelled = True
            raise

    def _may_take(self, priority: Priority) -> bool:
        if self._free <= 0:
            return False
        return priority < Priority.BACKGROUND or self._background_busy < self._background_cap

    def _take(self, priority: Priority) -> None:
        self._free -= 1
        if priority >= Priority.BACKGROUND:
            self._background_busy += 1

    def _release(self, priority: Priority) -> None:
        self._free += 1
        if priority >= Priority.BACKGROUND:
            self._background_busy -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the most urgent waiters that may have one."""
        passed_over = []
        while self._waiting and self._free > 0:
            entry = heapq.heappop(self._waiting)
            waiter = entry[2]
            if waiter.cancelled:
                continue
            if not self._may_take(waiter.priority):
                passed_over.append(entry)
                continue
            self._take(waiter.priority)
            waiter.granted = True
            waiter.woken.set()
        for entry in passed_over:
            heapq.heappush(self._waiting, entry)
