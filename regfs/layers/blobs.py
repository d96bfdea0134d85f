"""Layer blobs for the tree: their indexes (built once, kept on disk) and their bytes.

Layers layer. ``index`` gives a layer's published index, building it on first use: the
blob is streamed once to a temporary file, checked against its digest, then indexed in a
worker thread. ``read`` serves uncompressed bytes from chunks: memory, then the disk
cache, then the registry, fetching only the span from the nearest checkpoint. Every chunk
is checked against the hash recorded during the verified pass before it is used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import cachetools
import trio

from regfs.cache import locks
from regfs.cache.chunks import ChunkCache
from regfs.cache.flight import SingleFlight
from regfs.cache.memory import keep, listings_lru
from regfs.cache.temporaries import is_abandoned
from regfs.domain.deadline import CALLER_DEADLINE
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError, Unavailable, VerificationFailed
from regfs.domain.manifest import Descriptor, ImageManifest
from regfs.domain.soci import INDEX_DIGEST_ANNOTATION
from regfs.layers.compression import DECOMPRESSION_ERRORS, read_at
from regfs.layers.entries import IndexEntry
from regfs.layers.indexer import SOCI, build_index, build_soci_index, build_toc_index
from regfs.layers.inflate import inflate_from_checkpoint
from regfs.layers.remote import RemoteFile, fetch_in_task
from regfs.layers.soci import SociLookup
from regfs.layers.store import LayerIndex
from regfs.layers.toc import (
    ESTARGZ,
    FOOTER_SIZE,
    MAX_TOC_SIZE,
    TOC_ANNOTATIONS,
    TOC_FORMATS,
    TocChunk,
    chunk_bytes,
    toc_offset,
    toc_reference,
)
from regfs.layers.ztoc import MAX_ZTOC_SIZE
from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)

OPEN_INDEXES = 128
"""Layer indexes a mount keeps open (a file descriptor and up to 256 KiB of SQLite cache
each); the least recently used is closed and opens again when next queried."""
MEMORY_CHUNKS_BYTES = 64 << 20
INDEXING_AT_ONCE = 2  # decompression is CPU-bound: one per core
FIRST_PASSES_AT_ONCE = 4
"""Layers downloaded and indexed at once, for the whole mount: bounds ``tmp/`` to as many
whole blobs, and keeps an image of 10 000 layers from opening 10 000 requests (its first
failure then cancels the rest before they start)."""
REFETCHING_AT_ONCE = 8
REFETCH_ATTEMPTS = 2
REFETCH_AHEAD = 4 << 20
"""Bytes a zstd re-fetch decompresses and keeps past the chunk asked for (see
``_decompress_again``)."""
FAILURE_MEMORY = 2.0
"""Seconds a failed chunk re-fetch is remembered; the next read after that tries again."""


@dataclass(frozen=True, slots=True)
class LayerRef:
    """Where a layer blob can be fetched: the registry, repository and its descriptor."""

    host: str
    repository: str
    descriptor: Descriptor
    image: Digest | None = None
    """The image manifest naming the layer: its SOCI index may have the layer's zTOC."""
    soci_index: Digest | None = None
    """The SOCI index that manifest names in its annotation (SOCI v2), if any."""

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


def layer_refs(
    host: str, repository: str, image: Digest, manifest: ImageManifest
) -> list[LayerRef]:
    """The layers of image manifest ``image``, bottom first, each knowing its image and the
    SOCI index the manifest's annotation names (SOCI v2), if that is a valid digest."""
    named = manifest.annotation(INDEX_DIGEST_ANNOTATION)
    soci_index = None
    if named is not None:
        try:
            soci_index = Digest.parse(named)
        except MalformedContent as error:
            log.warning("%s/%s@%s: %s: %s", host, repository, image, INDEX_DIGEST_ANNOTATION,
                        error)  # fmt: skip
    return [
        LayerRef(host, repository, descriptor, image=image, soci_index=soci_index)
        for descriptor in manifest.layers
    ]


class LayerStore:
    """Indexes and chunked reads of layer blobs, shared by every image of a mount."""

    def __init__(self, client: RegistryClient, cache_dir: Path, cache_size: int) -> None:
        """``cache_size`` bounds all of ``cache_dir`` (see ``regfs.cache.chunks``)."""
        self._client = client
        self._chunks = ChunkCache(cache_dir, cache_size, in_use=self.open_index_paths)
        self._index_dir = cache_dir / "indexes"
        self._temporary_dir = cache_dir / "tmp"
        self._lock_dir = cache_dir / "locks"
        for directory in (self._index_dir, self._temporary_dir, self._lock_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _remove_stale(self._temporary_dir)
        _remove_stale(self._index_dir, prefix=".")
        locks.sweep(self._lock_dir)
        self._indexes: weakref.WeakValueDictionary[Path, LayerIndex] = weakref.WeakValueDictionary()
        """Every index a node of the tree may still use: their files are never evicted."""
        self._open = _ClosingLRU(OPEN_INDEXES)
        """The indexes whose SQLite connection is open: bounds the files the mount holds."""
        self._building: set[Path] = set()
        """Indexes being built and not yet opened: not to be evicted in between either."""
        self._lock = threading.Lock()  # the eviction thread reads the two above
        self._listings: cachetools.LRUCache[tuple[str, int], list[IndexEntry]] = listings_lru()
        self._memory: cachetools.LRUCache[bytes, bytes] = cachetools.LRUCache(
            MEMORY_CHUNKS_BYTES, getsizeof=len
        )
        self._flight: SingleFlight[object] = SingleFlight()
        self._failed_chunks: cachetools.TTLCache[bytes, RegfsError] = cachetools.TTLCache(
            1024, FAILURE_MEMORY, timer=trio.current_time
        )
        """Re-fetches that just failed: the kernel's retry of the same read (after an EIO
        on its read-ahead) gets the answer at once instead of a second timeout."""
        self._indexing = trio.CapacityLimiter(INDEXING_AT_ONCE)
        self._first_passes = trio.CapacityLimiter(FIRST_PASSES_AT_ONCE)
        # Re-fetching threads wait on the network through trio; their own limiter keeps them
        # from taking every default worker thread (which DNS lookups need too).
        self._refetching = trio.CapacityLimiter(REFETCHING_AT_ONCE)
        self._confirmed: set[tuple[str, str, Digest]] = set()
        """(host, repository, blob) the registry served or confirmed in this mount."""
        self._background: trio.Nursery | None = None
        """Where prefetches run: the nursery of ``run``, once the daemon started it."""
        self._unindexable: dict[Digest, MalformedContent] = {}
        """Layers whose verified bytes cannot be indexed: the same bytes will not do better."""
        self._fallbacks: dict[Digest, str] = {}
        """Why a layer's TOC or zTOC was not used: ``user.regfs.access`` says it."""
        self.chunk_reads = ChunkReads()
        self.on_fetched: Callable[[LayerRef, int], None] = lambda layer, size: None
        """Called with each piece of a layer's blob received (``regfs prefetch``'s progress)."""
        self._soci = SociLookup(client)
        self._paths: dict[LayerRef, Path] = {}
        """The index each layer is read through, once known (a zTOC's has a name of its own)."""

    async def run(self) -> None:
        """Work of the mount's own, in the background (prefetching), until cancelled."""
        async with trio.open_nursery() as nursery:
            self._background = nursery
            await trio.sleep_forever()

    async def _prefetch(self, layer: LayerRef, index: LayerIndex) -> None:
        """Fetch the chunks of the files an eStargz image's builder marked as read first
        (those before ``.prefetch.landmark``), as its other readers do. A failure stops it:
        the files are fetched when read, as any other."""
        CALLER_DEADLINE.set(math.inf)  # not the deadline of the request that started it
        end = index.meta.prefetch_end
        try:
            await self._load_pieces(layer, index, end)
        except RegfsError as error:
            log.info("%s: prefetch stopped: %s", layer, error)
            return
        except Exception:  # a bug: logged, and the mount goes on serving
            log.exception("%s: prefetch failed", layer)
            return
        log.info("%s: prefetched the first %d bytes its builder marked", layer, end)

    def _index_path(self, layer: LayerRef) -> Path:
        """Where the layer's index is kept. An index that may come from a TOC is named
        after the TOC annotations too: its bytes were never checked against the layer's
        digest, so an image elsewhere that names the same digest with another (or no)
        TOC must not be served from it."""
        name = layer.digest.dir_name
        toc = [pair for pair in layer.descriptor.annotations if pair[0] in TOC_ANNOTATIONS]
        if toc:
            name += f".toc-{hashlib.sha256(repr(toc).encode()).hexdigest()[:32]}"
        return self._index_dir / f"{name}.sqlite"

    async def index(self, layer: LayerRef) -> LayerIndex:
        """The layer's index, from memory, from disk, or built now from the blob.

        An index is keyed by digest alone, but content belongs to repositories: before one
        built for another repository (or another mount sharing the cache) is used here,
        the registry must confirm it serves the blob in this one (a HEAD, remembered).
        """
        cached = self._indexes.get(self._paths.get(layer) or self._index_path(layer))
        if cached is not None and self._serves(layer):
            self._use(cached)
            return cached

        async def load() -> LayerIndex:
            if layer.digest in self._unindexable:
                raise self._unindexable[layer.digest]
            ztoc = None
            index = self._known_or_opened(self._index_path(layer))
            if index is None:
                ztoc = await self._ztoc(layer)
                if ztoc is not None:
                    index = self._known_or_opened(self._soci_index_path(layer, ztoc))
            if index is not None and not self._serves(layer):
                await self._client.blob_exists(
                    layer.host, layer.repository, layer.digest, urls=layer.descriptor.urls
                )
            if index is None:
                try:
                    index = await self._build(layer, ztoc)
                except MalformedContent as error:
                    self._unindexable[layer.digest] = error
                    raise
            self._paths[layer] = index.path
            self._confirmed.add((layer.host, layer.repository, layer.digest))
            with self._lock:
                self._indexes[index.path] = index
            index.on_open = self._use
            self._use(index)
            return index

        # the image is part of the key: another image may give the layer a zTOC, or none
        key = ("index", layer.host, layer.repository, layer.digest, layer.image, layer.soci_index)
        return await self._flight.run(key, load)  # type: ignore[return-value]

    def _known_or_opened(self, path: Path) -> LayerIndex | None:
        return self._indexes.get(path) or LayerIndex.open(path, self._listings)

    async def _ztoc(self, layer: LayerRef) -> Descriptor | None:
        """The zTOC of a gzip layer in its image's SOCI index, if it has one."""
        if layer.image is None or not layer.descriptor.media_type.endswith("gzip"):
            return None
        found = await self._soci.index_for(
            layer.host, layer.repository, layer.image, layer.soci_index
        )
        return found.ztocs.get(layer.digest) if found is not None else None

    def _soci_index_path(self, layer: LayerRef, ztoc: Descriptor) -> Path:
        """An index built from a zTOC is named after it too: another image may give the
        same layer another zTOC (or none), and only this image's names this one."""
        return self._index_dir / f"{layer.digest.dir_name}.soci-{ztoc.digest.hex[:32]}.sqlite"

    def _serves(self, layer: LayerRef) -> bool:
        """True once the registry has served (or confirmed) this blob in this repository."""
        return (layer.host, layer.repository, layer.digest) in self._confirmed

    def _use(self, index: LayerIndex) -> None:
        """Count ``index`` as recently used among the open ones (closing the oldest)."""
        if index.is_open:
            self._open[index.path] = index

    async def _build(self, layer: LayerRef, ztoc: Descriptor | None) -> LayerIndex:
        """Build the layer's index and open it: from its zTOC, its TOC, or its whole blob;
        the file is kept from eviction meanwhile (a small cache, full of other layers'
        blobs, would otherwise take it at once)."""
        path = self._index_path(layer)
        soci_path = self._soci_index_path(layer, ztoc) if ztoc is not None else path
        with self._lock:
            self._building |= {path, soci_path}
        try:
            built = path
            if ztoc is not None and await self._index_from_soci(layer, ztoc, soci_path):
                built = soci_path
            elif not await self._index_from_toc(layer):
                await self._first_pass_once(layer)
            index = LayerIndex.open(built, self._listings)
            if index is None:
                raise VerificationFailed(f"{layer}: index unreadable right after building")
            if index.meta.prefetch_end and self._background is not None:
                self._background.start_soon(self._prefetch, layer, index)
            with self._lock:
                self._indexes[index.path] = index
            return index
        finally:
            with self._lock:
                self._building -= {path, soci_path}

    async def _first_pass_once(self, layer: LayerRef) -> None:
        """The first pass, one process at a time: another mount or a ``regfs prefetch``
        on the same cache dir already downloading this layer is waited for (a lock file
        in ``locks/``), and its index used."""
        async with _file_lock(self._lock_dir / f"{layer.digest.dir_name}.lock"):
            if self._index_path(layer).exists():
                log.info("%s: indexed meanwhile by another process on this cache", layer)
                return
            async with self._first_passes:
                await self._first_pass(layer)

    async def _first_pass(self, layer: LayerRef) -> None:
        """Download the blob to ``tmp/``, verify it, index it, delete it."""
        blob = self._temporary_dir / f"{layer.digest.hex}.{os.getpid()}.{secrets.token_hex(4)}"
        with open(blob, "wb") as file:
            sink = VerifyingSink(file, layer, self._chunks, self._count_fetched)
            try:
                await self._client.download_blob(
                    layer.host, layer.repository, layer.digest, sink, urls=layer.descriptor.urls
                )
                await sink.finish()
                await self._index_blob(layer, blob)
            finally:
                blob.unlink(missing_ok=True)
                index_size = _size_of(self._index_path(layer))
                await trio.to_thread.run_sync(self._chunks.note_growth, index_size - sink.stored)

    async def _index_from_toc(self, layer: LayerRef) -> bool:
        """Index an eStargz or zstd:chunked layer from its TOC alone, fetched by Range
        requests; False if it has none, or one that cannot be used (logged: the layer is
        then read whole, and checked against its digest)."""
        size = layer.descriptor.size
        path = self._index_path(layer)
        try:
            reference = toc_reference(dict(layer.descriptor.annotations))
            if reference is None or size is None or size <= FOOTER_SIZE:
                return False
            fetch = self._ranges(layer)
            if reference.position is not None:  # zstd:chunked: the annotation says where
                start, length, _ = reference.position
                end = start + length
            else:
                tail = await fetch(size - FOOTER_SIZE, size, "eStargz footer not fetched")
                start, footer_size = toc_offset(tail, size)
                end = size - footer_size
            if not 0 <= start < end <= size or end - start > MAX_TOC_SIZE:
                raise MalformedContent(f"TOC at [{start}, {end}) of a {size}-byte blob")
            toc = await fetch(start, end, f"{reference.format} TOC not fetched")
            warnings = await self._in_indexing_thread(functools.partial(
                build_toc_index, toc, path, reference=reference, toc_start=start,
                digest=str(layer.digest), size=size,
            ))  # fmt: skip
        except (MalformedContent, VerificationFailed) as error:
            log.warning("%s: TOC not used (%s): reading the whole layer", layer, error)
            self._fallbacks[layer.digest] = f"its TOC was not used: {error}"
            return False
        await self._indexed(layer, path, f"its {reference.format} TOC", len(toc), warnings)
        return True

    async def _in_indexing_thread(self, build: Callable[[], list[str]]) -> list[str]:
        async with self._indexing:
            return await trio.to_thread.run_sync(build)

    async def _indexed(
        self, layer: LayerRef, path: Path, source: str, fetched: int, warnings: list[str]
    ) -> None:
        """Count a new index in the cache and say where it came from."""
        await trio.to_thread.run_sync(self._chunks.note_growth, _size_of(path))
        log.info("%s: indexed from %s (%d bytes fetched)", layer, source, fetched)
        self._log_skipped(layer, warnings)

    async def _index_from_soci(self, layer: LayerRef, ztoc: Descriptor, path: Path) -> bool:
        """Index a gzip layer from its SOCI zTOC (one blob fetch); False if the zTOC cannot
        be used (logged: the layer is then read whole, and checked against its digest)."""
        try:
            size = min(ztoc.size or MAX_ZTOC_SIZE, MAX_ZTOC_SIZE)
            data = await self._client.get_blob(layer.host, layer.repository, ztoc.digest, size)
            if len(data) != ztoc.size or not ztoc.digest.matches(data):
                raise VerificationFailed(f"zTOC {ztoc.digest} does not match its descriptor")
            warnings = await self._in_indexing_thread(functools.partial(
                build_soci_index, data, path, digest=str(layer.digest),
                size=layer.descriptor.size,
            ))  # fmt: skip
        except Unavailable:
            raise  # the registry may answer later: no verdict on the zTOC
        except RegfsError as error:  # not parsed, not there, refused: the blob is still read
            log.warning("%s: SOCI zTOC not used (%s): reading the whole layer", layer, error)
            self._fallbacks[layer.digest] = f"its SOCI zTOC {ztoc.digest} was not used: {error}"
            return False
        await self._indexed(layer, path, f"its SOCI zTOC {ztoc.digest}", len(data), warnings)
        return True

    async def _index_blob(self, layer: LayerRef, blob: Path) -> None:
        """Index a verified blob in a worker thread, and log what it skipped."""
        async with self._indexing:
            try:
                warnings = await trio.to_thread.run_sync(
                    build_index, blob, self._index_path(layer), str(layer.digest),
                    self._chunks,
                )  # fmt: skip
            except MalformedContent as error:
                raise MalformedContent(f"{layer}: {error}") from None
        self._log_skipped(layer, warnings)

    @staticmethod
    def _log_skipped(layer: LayerRef, warnings: list[str]) -> None:
        for warning in warnings[:20]:
            log.warning("%s: %s", layer, warning)
        if len(warnings) > 20:
            log.warning("%s: %d more members skipped", layer, len(warnings) - 20)

    async def read(self, layer: LayerRef, index: LayerIndex, offset: int, size: int) -> bytes:
        """``size`` bytes of the layer's uncompressed tar at ``offset``, verified (for an
        index built from a TOC: of its virtual stream)."""
        return await _pieced(index, offset, size, self._pieces_of(layer, index))

    async def warm(self, layer: LayerRef, index: LayerIndex) -> None:
        """Load every piece of the layer, fetching and checking what the cache lacks."""
        await self._load_pieces(layer, index, index.meta.uncompressed_size)

    async def _load_pieces(self, layer: LayerRef, index: LayerIndex, end: int) -> None:
        """Load the pieces of the layer's stream before ``end`` (into the caches)."""
        piece_at = self._pieces_of(layer, index)
        position = 0
        while position < end:
            start, data = await piece_at(position)
            if start + len(data) <= position:
                raise MalformedContent(f"{layer}: no bytes at {position}")
            position = start + len(data)

    def _pieces_of(
        self, layer: LayerRef, index: LayerIndex
    ) -> Callable[[int], Awaitable[tuple[int, bytes]]]:
        """``piece_at(position)``: where the piece holding ``position`` starts, and its
        bytes: a TOC chunk, a zTOC span, or a chunk of the first pass."""
        if index.meta.compression in TOC_FORMATS:
            return functools.partial(self._toc_chunk_at, layer, index)
        if index.meta.compression == SOCI:
            return functools.partial(self._span_at, layer, index)
        chunk_size = index.meta.chunk_size

        async def chunk_at(position: int) -> tuple[int, bytes]:
            number = position // chunk_size
            return number * chunk_size, await self._chunk(layer, index, number)

        return chunk_at

    async def _chunk(self, layer: LayerRef, index: LayerIndex, number: int) -> bytes:
        sha256 = index.chunk_hash(number)

        async def fetch() -> bytes:
            return await self._fetch_chunk(layer, index, number, sha256)

        return await self._verified_chunk(sha256, fetch)

    async def _verified_chunk(self, sha256: bytes, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """The chunk of hash ``sha256``: from memory, the disk cache, or ``fetch`` (once for
        all who wait, a failure remembered ``FAILURE_MEMORY`` seconds)."""
        data = self._memory.get(sha256)
        if data is not None:
            self.chunk_reads.memory += 1
            return data
        failed = self._failed_chunks.get(sha256)
        if failed is not None:
            raise failed

        async def load() -> bytes:
            found = await trio.to_thread.run_sync(self._chunks.get, sha256)
            if found is not None:
                self.chunk_reads.disk += 1
            else:
                self.chunk_reads.fetched += 1
                try:
                    found = await self._checked_twice(fetch)
                except RegfsError as error:
                    self._failed_chunks[sha256] = error
                    raise
                await trio.to_thread.run_sync(self._chunks.put, sha256, found)
            keep(self._memory, sha256, found)
            return found

        return await self._flight.run(("chunk", sha256), load)  # type: ignore[return-value]

    @staticmethod
    async def _checked_twice(fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """``fetch``, once more if the bytes were damaged on the way (they fail to
        decompress or to hash right); both attempts share ``fetch``'s deadline."""
        for attempt in range(1, REFETCH_ATTEMPTS + 1):
            try:
                return await fetch()
            except (MalformedContent, VerificationFailed) as error:
                if attempt == REFETCH_ATTEMPTS:
                    raise
                log.info("%s; fetching it once more", error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _ranges(self, layer: LayerRef) -> Callable[[int, int, str], Awaitable[bytes]]:
        """Range requests for ``layer`` sharing one deadline: ``--timeout`` from now, or
        the caller's own if sooner. Each names what it fetches for the timeout's message."""
        timeout = self._client.config.timeout
        give_up_at = min(trio.current_time() + timeout, CALLER_DEADLINE.get())

        async def fetch(start: int, end: int, what: str) -> bytes:
            with trio.move_on_at(give_up_at):
                data = await self._client.get_blob_range(
                    layer.host, layer.repository, layer.digest, start, end,
                    urls=layer.descriptor.urls,
                )  # fmt: skip
                self._count_fetched(layer, len(data))
                return data
            raise Unavailable(f"{layer}: {what} within {timeout:g}s")

        return fetch

    async def _fetch_chunk(
        self, layer: LayerRef, index: LayerIndex, number: int, sha256: bytes
    ) -> bytes:
        """Produce a chunk again from the registry, from the nearest checkpoint on."""
        ranges = self._ranges(layer)
        gzip_index = await index.blob("gzip_index")

        async def within_deadline(start: int, end: int) -> bytes:
            return await ranges(start, end, f"chunk {number} not fetched again")

        async def fetch() -> bytes:
            return await self._decompress_again(
                layer, index, number, gzip_index,
                sha256=sha256, fetch=fetch_in_task(within_deadline),
            )  # fmt: skip

        return await self._checked_twice(fetch)

    async def _toc_chunk_at(
        self, layer: LayerRef, index: LayerIndex, position: int
    ) -> tuple[int, bytes]:
        """Where the chunk of a TOC layer's virtual stream covering ``position`` starts,
        and its bytes (cached, or fetched alone: one Range request for its gzip member or
        zstd frame)."""
        chunk = index.toc_chunk(position)
        if chunk is None:
            raise MalformedContent(f"{layer}: no TOC chunk at {position}")
        ranges = self._ranges(layer)

        async def fetch() -> bytes:
            what = f"chunk at {chunk.compressed_offset} not fetched"
            member = await ranges(chunk.compressed_offset, chunk.compressed_end, what)
            async with self._refetching:
                try:
                    return await trio.to_thread.run_sync(
                        chunk_bytes, member, chunk, index.meta.compression
                    )
                except (MalformedContent, VerificationFailed) as error:
                    raise type(error)(f"{layer}: {error}") from None

        return chunk.virtual_offset, await self._verified_chunk(chunk.sha256, fetch)

    async def _span_at(
        self, layer: LayerRef, index: LayerIndex, position: int
    ) -> tuple[int, bytes]:
        """Where the zTOC span covering ``position`` starts, and its bytes."""
        span = index.toc_chunk(position)
        if span is None:
            raise MalformedContent(f"{layer}: no zTOC span at {position}")
        return span.virtual_offset, await self._inflated_span(layer, index, span)

    async def _inflated_span(self, layer: LayerRef, index: LayerIndex, span: TocChunk) -> bytes:
        """A span's uncompressed bytes: kept in memory, else inflated from its compressed
        bytes (which the chunk cache keeps under their digest, the span's)."""
        # what comes out depends on the zTOC's bits, window and size too, not only on the
        # compressed bytes: another image's zTOC may give the same span other ones
        bits, window = index.span_start(span.virtual_offset)
        key = hashlib.sha256(
            b"inflated span %s %d %d %s" % (span.sha256, bits, span.size, window)
        ).digest()
        data = self._memory.get(key)
        if data is not None:
            return data
        ranges = self._ranges(layer)

        async def fetch() -> bytes:
            what = f"span at {span.compressed_offset} not fetched"
            compressed = await ranges(span.compressed_offset, span.compressed_end, what)
            if hashlib.sha256(compressed).digest() != span.sha256:
                raise VerificationFailed(
                    f"{layer}: span at {span.compressed_offset} does not match its zTOC digest"
                )
            return compressed

        async def inflate() -> bytes:
            compressed = await self._verified_chunk(span.sha256, fetch)
            inflated = await trio.to_thread.run_sync(
                inflate_from_checkpoint, compressed, bits, window, span.size,
                limiter=self._refetching,
            )  # fmt: skip
            if len(inflated) != span.size:
                raise MalformedContent(f"{layer}: span at {span.compressed_offset} inflates to "
                                       f"{len(inflated)} bytes, not {span.size}")  # fmt: skip
            keep(self._memory, key, inflated)
            return inflated

        return await self._flight.run(("inflate", key), inflate)  # type: ignore[return-value]

    async def _decompress_again(
        self,
        layer: LayerRef,
        index: LayerIndex,
        number: int,
        gzip_index: bytes | None,
        *,
        sha256: bytes,
        fetch: Callable[[int, int], bytes],
    ) -> bytes:
        """Chunk ``number`` from the blob read through ``fetch``, checked against its hash.

        A zstd layer restarts at a frame start, which may lie megabytes back: the chunks
        after this one, up to ``REFETCH_AHEAD`` or the next checkpoint, are decompressed on
        the way and kept (each checked against its own hash), so that a reader going on
        through an evicted frame does not restart at its start for every chunk.
        """
        meta = index.meta
        offset = number * meta.chunk_size
        checkpoint = index.checkpoint_before(offset)
        end = min(offset + meta.chunk_size, meta.uncompressed_size)
        if meta.compression == "zstd":
            ahead = min(index.checkpoint_after(offset), offset + REFETCH_AHEAD)
            if ahead < meta.uncompressed_size:
                ahead -= ahead % meta.chunk_size  # whole chunks only
            end = max(end, ahead)
        remote = RemoteFile(fetch, meta.compressed_size)
        try:
            read = functools.partial(
                read_at, cast(BinaryIO, remote), meta.compression, gzip_index, offset,
                end - offset, zstd_checkpoint=checkpoint,
            )  # fmt: skip
            data = await trio.to_thread.run_sync(read, limiter=self._refetching)
        except DECOMPRESSION_ERRORS as error:
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled fetch, not bad bytes
            if isinstance(remote.error, RegfsError):
                raise remote.error from None
            raise MalformedContent(f"{layer}: chunk {number}: cannot decompress: {error}") from None
        log.info("%s: chunk %d fetched again (%d compressed bytes)", layer, number, remote.fetched)
        chunk = data[: meta.chunk_size]
        if hashlib.sha256(chunk).digest() != sha256:
            raise VerificationFailed(
                f"{layer}: chunk {number} fetched again does not match its recorded hash"
            )
        for following, start in enumerate(range(meta.chunk_size, len(data), meta.chunk_size)):
            await self._keep_if_intact(
                index, number + 1 + following, data[start : start + meta.chunk_size]
            )
        return chunk

    async def _keep_if_intact(self, index: LayerIndex, number: int, data: bytes) -> None:
        """Keep chunk ``number``, made on the way to another, if it hashes right (if not,
        its own re-fetch will say so)."""
        sha256 = hashlib.sha256(data).digest()
        if sha256 == index.chunk_hash(number) and sha256 not in self._memory:
            await trio.to_thread.run_sync(self._chunks.put, sha256, data)
            keep(self._memory, sha256, data)

    def _count_fetched(self, layer: LayerRef, size: int) -> None:
        self.on_fetched(layer, size)

    def cache_usage(self) -> int:
        """Bytes in the cache dir, as the cache counts them."""
        return self._chunks.usage()

    def access(self, layer: LayerRef, index: LayerIndex) -> str:
        """How the layer is read (``user.regfs.access``), and why not lazily if it could
        have been."""
        kind = index.meta.compression
        if kind in TOC_FORMATS:
            how = f"{'eStargz' if kind == ESTARGZ else kind} TOC: chunks fetched as read"
        elif kind == SOCI:
            how = "SOCI zTOC: spans fetched as read"
        else:
            how = f"whole layer ({kind}): fetched once, checked, indexed"
        reason = self._fallbacks.get(layer.digest)
        return f"{how}; {reason}" if reason and kind not in TOC_FORMATS | {SOCI} else how

    async def fetched(self, layer: LayerRef) -> int:
        """Bytes of the layer (compressed, as they cross the network) whose content is in
        the cache now: its size times the share of its chunks cached; 0 before indexing."""
        size = layer.descriptor.size or 0
        path = self._paths.get(layer) or self._index_path(layer)
        index = self._indexes.get(path)
        opened = None
        if index is None:
            index = opened = LayerIndex.open(path, self._listings)
        if index is None:
            return 0
        try:
            pieces = await index.pieces()
        finally:
            if opened is not None:
                opened.close()
        total = sum(piece_size for _, piece_size in pieces)

        def cached() -> int:
            return sum(piece_size for sha256, piece_size in pieces
                       if sha256 in self._memory or self._chunks.has(sha256))  # fmt: skip

        present = await trio.to_thread.run_sync(cached)
        return round(size * present / total) if total else size

    def open_index_paths(self) -> set[Path]:
        """Index files this mount uses or is building: the chunk cache's eviction (in a
        worker thread) leaves them."""
        with self._lock:
            return {index.path for index in list(self._indexes.values())} | self._building

    def close(self) -> None:
        for index in list(self._indexes.values()):
            index.close()


async def _pieced(
    index: LayerIndex,
    offset: int,
    size: int,
    piece_at: Callable[[int], Awaitable[tuple[int, bytes]]],
) -> bytes:
    """``size`` bytes at ``offset`` of a stream made of pieces (chunks, TOC chunks, spans):
    ``piece_at(position)`` gives where the piece holding ``position`` starts, and its bytes."""
    end = min(offset + size, index.meta.uncompressed_size)
    parts = []
    position = offset
    while position < end:
        start, data = await piece_at(position)
        part = data[position - start : end - start]
        if not part:
            raise MalformedContent(f"{index.path.name}: no bytes at {position}")
        parts.append(part)
        position += len(part)
    return b"".join(parts)


@dataclass(slots=True)
class ChunkReads:
    """Where verified chunks came from since the mount started (``regfs status``)."""

    memory: int = 0
    disk: int = 0
    fetched: int = 0


class _ClosingLRU(cachetools.LRUCache[Path, LayerIndex]):
    """Open layer indexes, least recently used first: the one pushed out is closed (and
    opens again when next queried)."""

    def popitem(self) -> tuple[Path, LayerIndex]:
        path, index = super().popitem()
        index.close()
        return path, index


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
    ) -> None:
        self._file = file
        self._layer = layer
        self._cache = cache
        self._count = received
        self._hasher = hashlib.new(layer.digest.algorithm)
        self._received = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.stored = 0
        """Bytes in the file now, as counted in the cache's usage."""

    async def restart(self) -> None:
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

    async def finish(self) -> None:
        """Write what is pending, then check the whole blob against its digest and size."""
        await self._flush()
        await trio.to_thread.run_sync(self._file.flush)
        layer, size = self._layer, self._layer.descriptor.size
        actual = self._hasher.hexdigest()
        if actual != layer.digest.hex or (size is not None and self._received != size):
            raise VerificationFailed(
                f"{layer}: layer blob of {self._received} bytes hashes to "
                f"{layer.digest.algorithm}:{actual} (expected {size} bytes)"
            )


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path``, waited for without blocking the event loop (a
    lock held by a process that died is released by the kernel); the file is removed
    with the lock (see ``regfs.cache.locks``)."""
    delay = 0.01
    while (descriptor := locks.try_lock(path)) is None:
        await trio.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        locks.release(descriptor, path)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove_stale(directory: Path, prefix: str = "") -> None:
    """Delete what a killed daemon left half-written; another mount's live files stay."""
    now = time.time()
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another mount may be cleaning too
            if path.name.startswith(prefix) and is_abandoned(path, path.stat().st_mtime, now):
                path.unlink(missing_ok=True)
