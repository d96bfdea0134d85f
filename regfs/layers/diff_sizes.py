"""A layer's uncompressed size, known before its index is written (a layer store's ``info``).

Layers layer. podman asks for each layer's ``info``, whose ``diff-size`` is that size, and
waits for the answer; after the last one it has work of its own (reference counting, the
container, overlayfs's mount) that can go on while the index is still being written. The
size is known once a TOC is laid out (the index's stream is that layout) and from a zTOC's
header; for a layer read whole, once it is indexed. The index, once written, says the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from regfs.domain.digest import Digest


class _Answer:
    __slots__ = ("error", "known", "size")

    def __init__(self) -> None:
        self.known = trio.Event()
        self.size = 0
        self.error: Exception | None = None


class DiffSizes:
    """Each layer's size as soon as it is known, or why it will not be, for those waiting."""

    def __init__(self) -> None:
        self._answers: dict[Digest, _Answer] = {}

    def known(self, digest: Digest, size: int) -> None:
        """The size of layer ``digest``'s index-to-be (the first said is kept)."""
        answer = self._answers.setdefault(digest, _Answer())
        if not answer.known.is_set():
            answer.size = size
            answer.known.set()

    def failed(self, digest: Digest, error: Exception) -> None:
        """Indexing ``digest`` failed before its size was known: those waiting get
        ``error``; the next to ask waits for another try."""
        answer = self._answers.get(digest)
        if answer is not None and not answer.known.is_set():
            answer.error = error
            answer.known.set()
            del self._answers[digest]

    async def follow(self, digest: Digest, indexed_size: Callable[[], Awaitable[int]]) -> None:
        """Index layer ``digest`` (``indexed_size``: its size once indexed) and tell those
        waiting how it went, if nothing told them sooner."""
        try:
            size = await indexed_size()
        except Exception as error:
            self.failed(digest, error)
            raise
        self.known(digest, size)

    async def wait(self, digest: Digest) -> int:
        """The size of layer ``digest``, once ``known`` (or the error ``failed`` gave)."""
        answer = self._answers.setdefault(digest, _Answer())
        await answer.known.wait()
        if answer.error is not None:
            raise answer.error
        return answer.size
