"""Work a mount does of its own, beside what readers wait for: read-ahead of sequential
readers, eStargz prefetches, the rest of a lazily read layer (``--background-fetch``), and
layers indexed before anyone waits for them (a rootfs lookup's other layers, the next
layers a layer store's client will ask for), and the tag lists of tags looked up by
themselves (``tree/metadata.py``).

Layers layer. This is the one owner of that work. Tasks run in the nursery of ``run`` (the
mount's main loop starts it; a command without one, such as ``regfs prefetch``, starts
nothing here), outside every FUSE request's deadline. ``start_once`` is the one place that
says "at most once per layer" (per mount). A task that fails stops, with one log line:
what it did is done again, and its error reported, by the reader that needs it. On the
wire, the Range requests of this work go behind what readers wait for (``streams.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence

import trio

from regfs.domain.errors import RegfsError
from regfs.layers.layer_ref import LayerRef
from regfs.registry.request_deadline import detached

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[object]]
LayerWork = Callable[[LayerRef], Awaitable[object]]


class BackgroundWork:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._begun: set[tuple[str, Hashable]] = set()
        """(what, key) of the work ``start_once`` and ``start_in_turn`` began: at most once
        each per mount."""

    @property
    def running(self) -> bool:
        """True once ``run`` runs: work started now will be done."""
        return self._nursery is not None

    async def run(self) -> None:
        """Run the work started, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start(self, what: str, subject: LayerRef | str, work: Work) -> bool:
        """Begin ``work()`` (``what`` of ``subject``, as the log names it: a layer, or a
        repository's ``host/path``), unless nothing runs background work here; True if it
        began."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(self._quietly, what, subject, work)
        return True

    def start_once(
        self, what: str, subject: LayerRef | str, work: Work, *, key: Hashable | None = None
    ) -> bool:
        """``start``, unless ``what`` was begun before for ``key`` (by default ``subject``;
        the index a layer is read through, where that is what the work covers); True if
        it began now."""
        return self._first_time(what, subject if key is None else key) and self.start(
            what, subject, work
        )

    def start_in_turn(
        self, what: str, layers: Sequence[LayerRef], work: LayerWork, slots: trio.CapacityLimiter
    ) -> None:
        """``work(layer)`` for each of ``layers`` not begun before, begun in this order
        as one of ``slots`` frees (tasks started at once would take them in any order)."""
        fresh = [layer for layer in layers if self._first_time(what, layer)]
        if fresh:
            self.start(what, fresh[0], functools.partial(self._in_turn, what, fresh, work, slots))

    async def _in_turn(
        self, what: str, layers: Sequence[LayerRef], work: LayerWork, slots: trio.CapacityLimiter
    ) -> None:
        for layer in layers:
            await slots.acquire_on_behalf_of(layer)
            if not self.start(what, layer, functools.partial(_holding, slots, layer, work)):
                slots.release_on_behalf_of(layer)

    def _first_time(self, what: str, key: Hashable) -> bool:
        """True the first time ``what`` is asked for ``key`` while background work runs
        (whoever asked begins it then)."""
        if self._nursery is None or (what, key) in self._begun:
            return False
        self._begun.add((what, key))
        return True

    @staticmethod
    async def _quietly(what: str, subject: LayerRef | str, work: Work) -> None:
        try:
            with detached():  # begun by a request, done for the mount
                await work()
        except RegfsError as error:
            log.info("%s: %s stopped: %s", subject, what, error)
        except Exception:  # a bug: logged, and the mount goes on serving
            log.exception("%s: %s failed", subject, what)


async def _holding(slots: trio.CapacityLimiter, layer: LayerRef, work: LayerWork) -> None:
    """``work(layer)`` on the slot taken for it, freed when it ends."""
    try:
        await work(layer)
    finally:
        slots.release_on_behalf_of(layer)
