"""A layer blob streamed to a file, verified as it lands.

Layers layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import trio

from regfs.cache.chunks import ChunkCache
from regfs.domain.errors import VerificationFailed
from regfs.domain.verify import verified_stream
from regfs.layers.landing_blob import LandingBlob
from regfs.layers.layer_ref import LayerRef

if TYPE_CHECKING:
    from hashlib import _Hash


@dataclass(frozen=True, slots=True)
class HashedPrefix:
    """The first ``size`` bytes of a blob, written to its file, and their running hash:
    what a download cut off leaves to go on from (the hash object is copied, so the
    bytes need not be read and hashed again). Users copy ``hasher`` before updating it."""

    size: int
    hasher: _Hash


class VerifyingSink:
    """Writes a blob to its file, hashing and counting on the way; starts over on
    ``restart`` (a mirror failed midway) and refuses to grow past the descriptor's size.

    Disk writes and hashing run in worker threads, ``FLUSH_SIZE`` bytes at a time, so a
    slow disk delays this download only, not every request of the mount. What lands in
    ``tmp/`` is counted against the cache's bound as it lands (``stored``), when there is
    a cache (``regfs index push`` downloads outside any).
    """

    FLUSH_SIZE = 1 << 20

    def __init__(
        self,
        file: BinaryIO,
        layer: LayerRef,
        cache: ChunkCache | None,
        received: Callable[[LayerRef, int], None] = lambda layer, size: None,
        *,
        landing: LandingBlob | None = None,
        start: HashedPrefix | None = None,
    ) -> None:
        """``landing``: told of each flush (a reader follows the file as it grows), and
        abandoned on a restart (what it read is gone). ``start``: what ``file`` holds
        already (its position at its end), counted in the cache's usage; the blob's
        bytes after it are written next."""
        self._file = file
        self._landing = landing
        self._layer = layer
        self._cache = cache
        self._count = received
        self._hasher = hashlib.new(layer.digest.algorithm) if start is None else start.hasher.copy()
        self._received = 0 if start is None else start.size
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.stored = self._received
        """Bytes in the file now, as counted in the cache's usage."""

    def stored_prefix(self) -> HashedPrefix:
        """What the file holds now and its hash: where a download cut off goes on from
        (bytes received but still pending were not written, and are asked for again)."""
        return HashedPrefix(self.stored, self._hasher.copy())

    async def restart(self) -> None:
        """Forget what was received: a place's answer begins (again, if any came before)."""
        if self._landing is not None and self._received:
            self._landing.abandon()
        self._pending, self._pending_size = [], 0
        self._hasher = hashlib.new(self._layer.digest.algorithm)
        self._received = 0
        if self.stored:
            await trio.to_thread.run_sync(self._truncate)

    def _truncate(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        if self._cache is not None:
            self._cache.note_growth(-self.stored)
        self.stored = 0

    async def write(self, data: bytes) -> None:
        size = self._layer.descriptor.size
        self._received += len(data)
        if size is not None and self._received > size:  # never fill the disk for a liar
            raise VerificationFailed(f"{self._layer}: layer blob longer than {size} bytes")
        self._pending.append(data)
        self._pending_size += len(data)
        self._count(self._layer, len(data))
        if self._pending_size >= self.FLUSH_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        await trio.to_thread.run_sync(self._store, data)

    def _store(self, data: bytes) -> None:
        self._file.write(data)
        self._hasher.update(data)
        self.stored += len(data)
        if self._cache is not None:
            self._cache.note_growth(len(data))
        if self._landing is not None:
            self._file.flush()
            self._landing.landed(self.stored)

    async def finish(self) -> None:
        """Write what is pending, then check the whole blob against its digest and size."""
        await self._flush()
        await trio.to_thread.run_sync(self._file.flush)
        layer = self._layer
        verified_stream(self._hasher.hexdigest(), self._received, layer.digest,
                        size=layer.descriptor.size, what=f"{layer}: layer blob")  # fmt: skip
