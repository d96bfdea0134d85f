"""The one verifying getter of layer content: every piece by the sha256 that names it.

Layers layer. A piece is a chunk of a layer's uncompressed tar (first pass), a TOC chunk
(eStargz, zstd:chunked), a compressed zTOC span (SOCI) or a piece of a blob's own bytes (a
layer store's ``blob``, named here by ``keep_named``); each is named by the sha256 of its
bytes, recorded where a digest vouches for it (the verified first pass, a TOC or zTOC
the image digest covers, a blob checked whole).

Invariant: no piece leaves ``get`` or enters the memory or disk cache without hashing to
its name here. Readers hand over bytes (fetched, decompressed, read from disk) and never
check them themselves. Around that: pieces in memory (an LRU of ``MEMORY_BYTES``) and on
disk (``ChunkCache``); one fetch per piece for all who wait (single flight, per piece: a
reader asking for many pieces claims every missing one before it fetches, so one Range
request can bring them all while a reader asking for any of them waits for it); and a
failed fetch remembered ``FAILURE_MEMORY`` seconds, so the kernel's retry of a read that
just timed out is answered at once.

A fetch is the reader's: given the missing pieces, it makes them (one Range request per
run of adjacent pieces, one decompression hop) and hands over what it made in batches.
A reader may ask for pieces to come ``along`` with those it needs (a TOC miss's neighbours):
they are claimed too, unless cached or on their way, and fetched in the same call only if
something must be fetched anyway. A fetch may also hand over pieces it made on the way
(the chunks a zstd re-fetch decompresses past the one it wanted). Pieces nobody asked for
are checked and kept in memory like the others, but written to disk only once someone asks
for them (a miss brings up to a few hundred, and creating their files cost more than the
Range request that brought them). Each batch is hashed in one worker hop, handed to
those waiting, then what was asked for is stored on disk in another.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cachetools
import trio

from regfs.cache.chunks import ChunkCache, load_verified
from regfs.cache.memory import keep
from regfs.domain.errors import MalformedContent, RegfsError, VerificationFailed
from regfs.domain.verify import verified_sha256
from regfs.layers.piece_claims import Claim, Fetch, Flight, Made, Piece
from regfs.registry.request_deadline import leading, waiting_on

log = logging.getLogger(__name__)

MEMORY_BYTES = 48 << 20
FAILURE_MEMORY = 2.0
"""Seconds a failed fetch is remembered; the next read after that tries again."""
FETCH_ATTEMPTS = 2
"""A piece damaged on the way (it does not decompress, or hash right) is fetched once more."""

S = TypeVar("S")


@dataclass(slots=True)
class PieceReads:
    """Where verified pieces came from since the mount started (``regfs status``)."""

    memory: int = 0
    disk: int = 0
    fetched: int = 0


class PieceMemory(cachetools.LRUCache[bytes, bytes]):
    """Verified pieces in memory, by name, least recently used first out; ``unsaved``
    names those not written to the disk cache yet (made on the way, nobody asked yet)."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, getsizeof=len)
        self.unsaved: set[bytes] = set()

    def popitem(self) -> tuple[bytes, bytes]:
        name, data = super().popitem()
        self.unsaved.discard(name)
        return name, data


def _checked(made: Made[S]) -> list[bytes | RegfsError]:
    """Each made piece if it hashes to its name, else why not. Blocking: one worker hop
    for a whole batch."""
    outcomes: list[bytes | RegfsError] = []
    for piece, data in made:
        if isinstance(data, MalformedContent):
            outcomes.append(data)
            continue
        try:
            outcomes.append(verified_sha256(data, piece.sha256, what=piece.what))
        except VerificationFailed as error:
            outcomes.append(error)
    return outcomes


def _stored(chunks: ChunkCache, checked: list[tuple[bytes, bytes]]) -> None:
    """Store pieces whose hashes were checked. Blocking."""
    for sha256, data in checked:
        chunks.put(sha256, data)


def _stored_named(chunks: ChunkCache, data: bytes) -> bytes:
    """Store ``data`` under its sha256, returned. Blocking."""
    sha256 = hashlib.sha256(data).digest()
    chunks.put(sha256, data)
    return sha256


class VerifiedPieces:
    def __init__(self, chunks: ChunkCache) -> None:
        self.chunks = chunks
        self._memory = PieceMemory(MEMORY_BYTES)
        self._flights: dict[bytes, Flight] = {}
        self._failed: cachetools.TTLCache[bytes, RegfsError] = cachetools.TTLCache(
            1024, FAILURE_MEMORY, timer=trio.current_time
        )
        self.reads = PieceReads()

    async def get(
        self, pieces: Sequence[Piece[S]], fetch: Fetch[S], along: Sequence[Piece[S]] = ()
    ) -> list[bytes]:
        """The checked bytes of each of ``pieces``, in order: from memory, the disk cache,
        another caller's fetch, or ``fetch`` (once more for pieces damaged on the way).
        If any must be fetched, so are those of ``along`` neither cached nor on their way
        (a TOC miss's neighbours), in the same call of ``fetch``: claimed as the others
        are, so that a read-ahead does not fetch them again."""
        found: dict[bytes, bytes] = {}
        while True:
            wanted = _unique(p for p in pieces if p.sha256 not in found)
            if not wanted:
                return [found[piece.sha256] for piece in pieces]
            waiting, claim = self._claim(wanted, found, waits=True)
            try:
                await self._save(claim.unsaved)
                if claim.pieces:
                    self._claim_along(claim, along)
                    on_disk, present = await trio.to_thread.run_sync(
                        self._on_disk, [n for n in claim.pieces if n not in claim.along],
                        list(claim.along),
                    )  # fmt: skip
                    self.reads.disk += len(on_disk)
                    for sha256, data in on_disk.items():
                        keep(self._memory, sha256, data)
                        claim.resolve(sha256, data)
                        found[sha256] = data
                    claim.abandon(present if claim.asked else list(claim.along))
                    await self._fetch(claim, fetch, found, remember_failures=True)
            finally:
                claim.abandon()
            along = ()  # brought along by the first round's fetch, if any
            for sha256, flight in waiting.items():
                with waiting_on(flight.progress):
                    await flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                if flight.data is not None:
                    found[sha256] = flight.data
                # else: its fetcher was cancelled; asked for again on the next round

    async def load(self, pieces: Iterable[Piece[S]], fetch: Fetch[S]) -> None:
        """Have ``pieces`` in the caches: fetch those neither cached nor being fetched
        (read-ahead, prefetching). Never waits for another caller's fetch."""
        _, claim = self._claim(_unique(pieces), {}, waits=False)
        try:
            await self._save(claim.unsaved)
            if claim.pieces:
                present = await trio.to_thread.run_sync(self._present, list(claim.pieces))
                claim.abandon(present)
                await self._fetch(claim, fetch, {}, remember_failures=False)
        finally:
            claim.abandon()

    def _claim(
        self, wanted: Sequence[Piece[S]], found: dict[bytes, bytes], *, waits: bool
    ) -> tuple[dict[bytes, Flight], Claim[S]]:
        """Sort ``wanted`` into those in memory (put in ``found``), those another caller
        is fetching (returned to wait for, if ``waits``) and those claimed here, each now
        in flight. A piece whose fetch failed a moment ago raises that failure."""
        waiting: dict[bytes, Flight] = {}
        claim = Claim[S](self._flights)
        for piece in wanted:
            sha256 = piece.sha256
            data = self._memory.get(sha256)
            if data is not None:
                found[sha256] = data
                self.reads.memory += 1
                if sha256 in self._memory.unsaved:
                    self._memory.unsaved.discard(sha256)
                    claim.unsaved.append((sha256, data))
            elif (flight := self._flights.get(sha256)) is not None:
                if waits:
                    waiting[sha256] = flight
            elif (failed := self._failed.get(sha256)) is not None:
                if waits:
                    claim.abandon()
                    raise failed
            else:
                claim.add(piece)
        return waiting, claim

    async def _save(self, pieces: list[tuple[bytes, bytes]]) -> None:
        """Write to the disk cache pieces made on the way that someone now asked for."""
        if pieces:
            await trio.to_thread.run_sync(_stored, self.chunks, pieces)

    def _claim_along(self, claim: Claim[S], along: Sequence[Piece[S]]) -> None:
        """Claim the pieces of ``along`` not claimed, in memory, on their way, or just
        failed."""
        for piece in _unique(along):
            sha256 = piece.sha256
            if not (sha256 in claim.pieces or sha256 in self._memory
                    or sha256 in self._flights or sha256 in self._failed):  # fmt: skip
                claim.add(piece, along=True)

    def _on_disk(
        self, asked: list[bytes], along: list[bytes]
    ) -> tuple[dict[bytes, bytes], list[bytes]]:
        """The intact pieces of ``asked`` on disk, and which of ``along`` are there (one
        worker hop for both). Blocking."""
        return self._load_all(asked), self._present(along)

    def _load_all(self, names: list[bytes]) -> dict[bytes, bytes]:
        """The intact pieces of ``names`` on disk. Blocking."""
        loaded = {sha256: load_verified(self.chunks, sha256) for sha256 in names}
        return {sha256: data for sha256, data in loaded.items() if data is not None}

    def _present(self, names: list[bytes]) -> list[bytes]:
        """The pieces of ``names`` on disk (not checked: ``get`` checks). Blocking."""
        return [sha256 for sha256 in names if self.chunks.has(sha256)]

    async def _fetch(
        self, claim: Claim[S], fetch: Fetch[S], found: dict[bytes, bytes], *,
        remember_failures: bool,
    ) -> None:  # fmt: skip
        """Fetch the pieces still claimed into the caches and ``found``; those damaged on
        the way once more. A piece that cannot be had fails its flight (and is remembered
        a moment, if ``remember_failures``) and raises."""
        remaining = claim.pieces
        if not remaining:
            return
        self.reads.fetched += claim.asked
        damaged: dict[bytes, RegfsError] = {}

        async def deliver(made: Made[S]) -> None:
            outcomes = await trio.to_thread.run_sync(_checked, made)
            asked = []
            for (piece, _), outcome in zip(made, outcomes, strict=True):
                if isinstance(outcome, bytes):
                    keep(self._memory, piece.sha256, outcome)
                    if piece.sha256 in remaining and piece.sha256 not in claim.along:
                        asked.append((piece.sha256, outcome))
                        found[piece.sha256] = outcome
                    elif piece.sha256 in self._memory:
                        self._memory.unsaved.add(piece.sha256)
                    if piece.sha256 in remaining:
                        claim.resolve(piece.sha256, outcome)
                elif piece.sha256 in remaining:
                    damaged[piece.sha256] = outcome
            # after the waiters have them: creating many small files is slow on some disks
            await trio.to_thread.run_sync(_stored, self.chunks, asked)

        for attempt in range(1, FETCH_ATTEMPTS + 1):
            damaged.clear()
            try:
                with leading(claim.progress):
                    await fetch(list(remaining.values()), deliver)
            except RegfsError as error:
                claim.abandon(list(claim.along))  # nobody's loss
                for sha256 in list(remaining):
                    self._fail(claim, sha256, error, remember=remember_failures)
                raise
            claim.abandon(list(claim.along))  # not made: fetched again only when asked for
            if not remaining:
                return
            for sha256, piece in remaining.items():
                damaged.setdefault(sha256, MalformedContent(f"{piece.what}: not made"))
            if attempt < FETCH_ATTEMPTS:
                for sha256 in remaining:
                    log.info("%s; fetching it once more", damaged[sha256])
        first = damaged[next(iter(remaining))]
        for sha256 in list(remaining):
            self._fail(claim, sha256, damaged[sha256], remember=remember_failures)
        raise first

    def _fail(self, claim: Claim[S], sha256: bytes, error: RegfsError, *, remember: bool) -> None:
        if remember:
            self._failed[sha256] = error
        claim.fail(sha256, error)

    async def keep_named(self, data: bytes) -> bytes:
        """Keep ``data`` under its sha256, which is returned: a piece of a blob streamed
        whole and cut here (a layer store's ``blob``), named by its own bytes; what vouches
        for the names is the whole blob's digest, checked by the caller."""
        sha256 = await trio.to_thread.run_sync(_stored_named, self.chunks, data)
        keep(self._memory, sha256, data)
        return sha256

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


def _unique(pieces: Iterable[Piece[S]]) -> list[Piece[S]]:
    """``pieces`` without repeats of a name (a layer may hold the same chunk twice)."""
    seen: dict[bytes, Piece[S]] = {}
    for piece in pieces:
        seen.setdefault(piece.sha256, piece)
    return list(seen.values())
