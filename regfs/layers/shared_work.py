"""Single flight for work that takes long: those waiting share the progress of the one doing it.

Layers layer. A layer's index may take a download of hundreds of megabytes, begun by one
request or by the mount's background work (indexing ahead, a layer store's ``info``). A
request that asks for it meanwhile waits in ``SingleFlight``; its deadline is
``--timeout`` without progress (``registry/request_deadline.py``), and the bytes arrive
in the other task: through ``SharedWork`` they count as the waiting request's progress.
A request whose deadline passes while the work waits for another process says what for
(``blocked_on``).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

from regfs.cache.flight import SingleFlight
from regfs.domain.errors import Unavailable
from regfs.registry.request_deadline import SharedProgress, leading, request_expired, waiting_on

V = TypeVar("V")


class SharedWork(Generic[V]):
    """``SingleFlight``, its callers waiting on the progress of the one computing. The
    progress is the key's, not one leader's: where a leader is cancelled and a waiting
    caller takes over, the others go on sharing the new leader's progress."""

    def __init__(self) -> None:
        self._flight: SingleFlight[V] = SingleFlight()
        self._progress: dict[Hashable, SharedProgress] = {}
        self._callers: collections.Counter[Hashable] = collections.Counter()

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        shared = self._progress.setdefault(key, SharedProgress())
        self._callers[key] += 1

        async def lead() -> V:
            with leading(shared):
                return await compute()

        try:
            with waiting_on(shared):
                return await self._flight.run(key, lead)
        except trio.Cancelled:
            if request_expired() and shared.blocked_on is not None:
                raise Unavailable(shared.blocked_on()) from None
            raise
        finally:
            self._callers[key] -= 1
            if not self._callers[key]:
                del self._callers[key], self._progress[key]
