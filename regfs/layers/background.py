"""Work a mount does of its own, beside what readers wait for: eStargz prefetches, and
layers indexed ahead of a layer store's client.

Layers layer. Tasks run in the nursery of ``run`` (the mount's main loop starts it; a
command without one, such as ``regfs prefetch``, starts nothing here). A task that fails
stops, with one log line: what it did is done again, and its error reported, by the
reader that needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable

import trio

from regfs.domain.errors import RegfsError
from regfs.layers.layer_ref import LayerRef

log = logging.getLogger(__name__)

Work = Callable[[LayerRef], Awaitable[object]]


class BackgroundWork:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._begun: set[Hashable] = set()
        """(what, layer) of the work ``start_once`` began: at most once each per mount."""

    async def run(self) -> None:
        """Run the work started, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await trio.sleep_forever()

    def start(self, what: str, layer: LayerRef, work: Work) -> None:
        """Begin ``work(layer)``, unless nothing runs background work here."""
        if self._nursery is not None:
            self._nursery.start_soon(self._quietly, what, layer, work)

    def start_once(self, what: str, layer: LayerRef, work: Work) -> None:
        """``start``, unless ``what`` was begun for ``layer`` before."""
        if self._nursery is not None and (what, layer) not in self._begun:
            self._begun.add((what, layer))
            self.start(what, layer, work)

    @staticmethod
    async def _quietly(what: str, layer: LayerRef, work: Work) -> None:
        try:
            await work(layer)
        except RegfsError as error:
            log.info("%s: %s stopped: %s", layer, what, error)
        except Exception:  # a bug: logged, and the mount goes on serving
            log.exception("%s: %s failed", layer, what)
