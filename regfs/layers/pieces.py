"""The one verifying getter of layer content: every piece by the sha256 that names it.

Layers layer. A piece is a chunk of a layer's uncompressed tar (first pass), a TOC chunk
(eStargz, zstd:chunked) or a compressed zTOC span (SOCI); each is named by the sha256 of
its bytes, recorded where a digest vouches for it (the verified first pass, a TOC or zTOC
the image digest covers).

Invariant: no piece leaves ``get`` or enters the memory or disk cache without hashing to
its name here. Callers hand over bytes (fetched, decompressed, read from disk) and never
check them themselves. Around that: one request per piece for all who wait (single
flight), pieces in memory (an LRU of ``MEMORY_BYTES``) and on disk (``ChunkCache``), and a
failed fetch remembered ``FAILURE_MEMORY`` seconds, so the kernel's retry of a read that
just timed out is answered at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import cachetools
import trio

from regfs.cache.chunks import ChunkCache, load_verified
from regfs.cache.flight import SingleFlight
from regfs.cache.memory import keep
from regfs.domain.errors import MalformedContent, RegfsError, VerificationFailed
from regfs.domain.verify import verified_sha256

log = logging.getLogger(__name__)

MEMORY_BYTES = 48 << 20
FAILURE_MEMORY = 2.0
"""Seconds a failed fetch is remembered; the next read after that tries again."""
FETCH_ATTEMPTS = 2
"""A piece damaged on the way (it does not decompress, or hash right) is fetched once more."""


@dataclass(slots=True)
class PieceReads:
    """Where verified pieces came from since the mount started (``regfs status``)."""

    memory: int = 0
    disk: int = 0
    fetched: int = 0


class VerifiedPieces:
    def __init__(self, chunks: ChunkCache) -> None:
        self.chunks = chunks
        self._memory: cachetools.LRUCache[bytes, bytes] = cachetools.LRUCache(
            MEMORY_BYTES, getsizeof=len
        )
        self._flight: SingleFlight[bytes] = SingleFlight()
        self._failed: cachetools.TTLCache[bytes, RegfsError] = cachetools.TTLCache(
            1024, FAILURE_MEMORY, timer=trio.current_time
        )
        self.reads = PieceReads()

    async def get(self, sha256: bytes, fetch: Callable[[], Awaitable[bytes]], what: str) -> bytes:
        """The piece named ``sha256``: from memory, the disk cache, or ``fetch`` (whose bytes
        are checked here, and fetched once more if damaged on the way)."""
        data = self._memory.get(sha256)
        if data is not None:
            self.reads.memory += 1
            return data
        failed = self._failed.get(sha256)
        if failed is not None:
            raise failed

        async def load() -> bytes:
            found = await trio.to_thread.run_sync(load_verified, self.chunks, sha256)
            if found is not None:
                self.reads.disk += 1
            else:
                self.reads.fetched += 1
                try:
                    found = await self._fetched(sha256, fetch, what)
                except RegfsError as error:
                    self._failed[sha256] = error
                    raise
                await trio.to_thread.run_sync(self.chunks.put, sha256, found)
            keep(self._memory, sha256, found)
            return found

        return await self._flight.run(sha256, load)

    @staticmethod
    async def _fetched(sha256: bytes, fetch: Callable[[], Awaitable[bytes]], what: str) -> bytes:
        """``fetch``'s bytes, checked; fetched once more if they were damaged on the way
        (both attempts share ``fetch``'s deadline)."""
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                return verified_sha256(await fetch(), sha256, what=what)
            except (MalformedContent, VerificationFailed) as error:
                if attempt == FETCH_ATTEMPTS:
                    raise
                log.info("%s; fetching it once more", error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def keep_if_intact(self, sha256: bytes, data: bytes) -> None:
        """Keep a piece made on the way to another (a zstd re-fetch decompresses past the
        chunk it wanted) if it hashes right; if not, its own fetch will say so."""
        if sha256 in self._memory or hashlib.sha256(data).digest() != sha256:
            return
        await trio.to_thread.run_sync(self.chunks.put, sha256, data)
        keep(self._memory, sha256, data)

    async def keep_on_disk(self, sha256: bytes) -> None:
        """Write a piece held in memory to the disk cache unless it is there: a pin that
        names it now must find its file (an eviction may have taken it before the pin was
        recorded, while this process still held the bytes)."""
        data = self._memory.get(sha256)
        if data is not None:
            await trio.to_thread.run_sync(self.chunks.put, sha256, data)

    def cached(self, sha256: bytes) -> bool:
        """True if the piece is in memory or on disk now (not checked: ``get`` checks).
        Blocking (a stat)."""
        return sha256 in self._memory or self.chunks.has(sha256)
