"""A layer's uncompressed size, known before its index is written (a layer store's ``info``).

Layers layer. podman asks for each layer's ``info``, whose ``diff-size`` is that size, and
waits for the answer; after the last one it has work of its own (reference counting, the
container, overlayfs's mount) that can go on while the index is still being written. The
size is known once a TOC or zTOC has been read and checked, before the SQLite file is
written; for a layer read whole, once it is indexed. Answers are per layer as an image
gives it (another image may give the same blob a TOC or zTOC, or none, and so another
size), and dropped once the index is published: it answers from then on. Those waiting
for a size share the progress of the work that will tell it (``request_deadline.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable

import trio

from regfs.domain.errors import Unavailable
from regfs.registry.request_deadline import SharedProgress, leading, waiting_on


class _Answer:
    __slots__ = ("error", "known", "progress", "size")

    def __init__(self) -> None:
        self.known = trio.Event()
        self.size = 0
        self.error: Exception | None = None
        self.progress = SharedProgress()


class DiffSizes:
    """Each layer's size as soon as it is known, or why it will not be, for those waiting."""

    def __init__(self) -> None:
        self._answers: dict[Hashable, _Answer] = {}

    def known(self, layer: Hashable, size: int) -> None:
        """The size of ``layer``'s index-to-be (the first said is kept)."""
        answer = self._answers.setdefault(layer, _Answer())
        if not answer.known.is_set():
            answer.size = size
            answer.known.set()

    def failed(self, layer: Hashable, error: Exception) -> None:
        """Indexing ``layer`` failed: those waiting get ``error`` if its size was not
        known yet; the next to ask waits for another try either way (the size told
        before its index could not be written is not kept: a layer read whole after a
        failed TOC has another)."""
        answer = self._answers.pop(layer, None)
        if answer is not None and not answer.known.is_set():
            answer.error = error
            answer.known.set()

    def settled(self, layer: Hashable, size: int) -> None:
        """``layer``'s index is published, of ``size``: those still waiting get it, and
        nothing is kept (the index answers from now on)."""
        answer = self._answers.pop(layer, None)
        if answer is not None and not answer.known.is_set():
            answer.size = size
            answer.known.set()

    async def follow(self, layer: Hashable, indexed_size: Callable[[], Awaitable[int]]) -> None:
        """Index ``layer`` (``indexed_size``: its size once indexed) and tell those
        waiting how it went, if nothing told them sooner; cancelled, it tells them so. Its
        progress is theirs."""
        try:
            with leading(self._answers.setdefault(layer, _Answer()).progress):
                size = await indexed_size()
        except Exception as error:
            self.failed(layer, error)
            raise
        except BaseException:
            self.failed(layer, Unavailable(f"{layer}: indexing was cancelled"))
            raise
        self.settled(layer, size)

    async def wait(self, layer: Hashable) -> int:
        """The size of ``layer``, once ``known`` (or the error ``failed`` gave)."""
        answer = self._answers.setdefault(layer, _Answer())
        with waiting_on(answer.progress):
            await answer.known.wait()
        if answer.error is not None:
            raise answer.error
        return answer.size
