"""Single flight: concurrent callers asking for the same key share one computation.

Cache layer. The kernel sends many requests at once (``ls -l`` looks up every entry in
parallel); without this each would fetch the same catalog or manifest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

V = TypeVar("V")


class _Call(Generic[V]):
    __slots__ = ("done", "error", "finished", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.finished = False
        self.value: V | None = None
        self.error: Exception | None = None


class SingleFlight(Generic[V]):
    """Runs at most one ``compute`` per key at a time; the others wait for its outcome.

    If the task computing is cancelled, a waiting caller takes over rather than failing:
    a cancelled leader says nothing about the key.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[V]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        while (call := self._calls.get(key)) is not None:
            await call.done.wait()
            if call.finished:
                if call.error is not None:
                    raise call.error
                return call.value  # type: ignore[return-value]
        call = _Call[V]()
        self._calls[key] = call
        try:
            call.value = await compute()
        except Exception as error:
            call.error = error
            call.finished = True
            raise
        else:
            call.finished = True
            return call.value
        finally:
            del self._calls[key]
            call.done.set()

    def in_flight(self) -> int:
        """How many keys are being computed now (for statistics and tests)."""
        return len(self._calls)
