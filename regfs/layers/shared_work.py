"""Single flight for work that takes long: those waiting share the progress of the one doing it.

Layers layer. A layer's index may take a download of hundreds of megabytes, begun by one
request or by the mount's background work (indexing ahead, a layer store's ``info``). A
request that asks for it meanwhile waits in ``SingleFlight``; its deadline is
``--timeout`` without progress (``registry/request_deadline.py``), and the bytes arrive
in the other task: through ``SharedWork`` they count as the waiting request's progress.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from regfs.cache.flight import SingleFlight
from regfs.registry.request_deadline import SharedProgress, leading, waiting_on

V = TypeVar("V")


class SharedWork(Generic[V]):
    """``SingleFlight``, its callers waiting on the progress of the one computing."""

    def __init__(self) -> None:
        self._flight: SingleFlight[V] = SingleFlight()
        self._progress: dict[Hashable, SharedProgress] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        async def lead() -> V:
            shared = self._progress[key] = SharedProgress()
            try:
                with leading(shared):
                    return await compute()
            finally:
                if self._progress.get(key) is shared:
                    del self._progress[key]

        with waiting_on(self._progress.get(key)):
            return await self._flight.run(key, lead)
