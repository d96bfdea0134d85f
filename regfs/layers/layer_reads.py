"""Reads of layer content for a mount: what a reader waits for, and what is fetched ahead.

Layers layer. A read goes to the reader of its index's kind (``readers.py``); before it
waits, the range a sequential reader will want next (``read_ahead.py``) is asked for as
background work of the mount (``background.py``), so that its Range requests are on their
way while the read's own are answered. Read-ahead, the eStargz prefetch and a layer's rest
(``--background-fetch``) run there, outside every FUSE request's deadline, each under a
deadline of its own, behind readers on the wire (``streams.py``); their failures are
logged, never a reader's (a reader needing a piece they failed to bring fetches it itself,
under its own deadline). A layer whose files are read one after another by a program
going through all of them (``walks.py``) has its rest fetched there too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cachetools
import trio

from regfs.cache.flight import SingleFlight
from regfs.domain.errors import Unavailable
from regfs.layers.background import BackgroundWork
from regfs.layers.early_bytes import EarlyStreams
from regfs.layers.formats.start_files import files_in
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexKind
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.read_ahead import ReadAhead
from regfs.layers.reader_base import PieceReader, RangeFetch, ReadContext
from regfs.layers.readers import (
    INFLATED_SPANS_BYTES,
    load_pieces,
    read_stream,
    reader_for,
    run_reader_for,
)
from regfs.layers.streams import Priority, Streams
from regfs.layers.walks import WALK_FILES, Walks
from regfs.registry.bodies import Consumer
from regfs.registry.client import RegistryClient
from regfs.registry.request_deadline import moved_by_progress

log = logging.getLogger(__name__)

DECOMPRESSING_AT_ONCE = 8
"""Worker threads decompressing re-fetched pieces at once, for the whole mount."""
READING_AHEAD_AT_ONCE = 4
"""Read-ahead tasks fetching at once, for the whole mount (more wait their turn)."""
STREAMS_FOLLOWED = 256
"""Layers whose readers' positions are remembered for read-ahead (the least recent go)."""
NAMED_FILES = 12
"""Files fetched ahead named one by one in the log; more are counted."""


class LayerReads:
    """Every read of layer content of one mount (or ``regfs prefetch``)."""

    def __init__(
        self,
        client: RegistryClient,
        pieces: VerifiedPieces,
        spool_dir: Path,
        received: Callable[[LayerRef, int], None],
        background: BackgroundWork,
        *,
        background_fetch: bool = False,
    ) -> None:
        """``received(layer, size)`` is told of each piece of a blob fetched; read-ahead
        and prefetches are work of ``background``; ``background_fetch``: a lazily read
        layer, once read, is fetched whole behind."""
        self._client = client
        self._received = received
        self._background = background
        self._background_fetch = background_fetch
        self.early = EarlyStreams(background, self._stream)
        """Streams of eStargz blobs' starts, begun by their TOC's builder."""
        # Decompressing threads of re-fetches have their own limiter: they must not take
        # every default worker thread (which DNS lookups need too).
        self.context = ReadContext(
            pieces, self.ranges, trio.CapacityLimiter(DECOMPRESSING_AT_ONCE),
            cachetools.LRUCache(INFLATED_SPANS_BYTES, getsizeof=len), SingleFlight(), Streams(),
            spool_dir=spool_dir, from_stream=self.early.of,
        )  # fmt: skip
        self._followed: cachetools.LRUCache[Path, ReadAhead] = cachetools.LRUCache(STREAMS_FOLLOWED)
        self._reading_ahead = trio.CapacityLimiter(READING_AHEAD_AT_ONCE)
        self._walks = Walks()

    async def read(
        self,
        layer: LayerRef,
        index: LayerIndex,
        offset: int,
        size: int,
        file: tuple[int, int] | None = None,
    ) -> bytes:
        """``size`` bytes of the layer's stream at ``offset``, verified. ``file``: where
        the file being read lies on the stream, to read ahead of a sequential reader."""
        reader = reader_for(layer, index, self.context)
        end = min(offset + size, index.meta.uncompressed_size)
        background = self._background
        if file is not None and reader.reads_ahead and background.running and offset < end:
            followed = self._followed.get(index.path)
            if followed is None:
                followed = self._followed[index.path] = ReadAhead()
            ahead = followed.after(offset, end, *file)
            if ahead is not None:
                read_ahead = functools.partial(self._read_ahead, reader, *ahead)
                background.start(f"read-ahead of {ahead[0]}-{ahead[1]}", layer, read_ahead)
            walked = self._walks.read(index.path, file[0])
            if walked:
                log.info("%s: %d of its files read: fetching the rest", layer, WALK_FILES)
            if self._background_fetch or walked:
                fetch_whole = functools.partial(self._fetch_whole, reader, layer, index)
                background.start_once("background fetch", layer, fetch_whole, key=index.path)
        return await read_stream(reader, index.meta.uncompressed_size, offset, size)

    async def _read_ahead(self, reader: PieceReader, start: int, end: int) -> None:
        async with self._reading_ahead:
            await reader.load(start, end, Priority.AHEAD)

    @staticmethod
    async def _fetch_whole(reader: PieceReader, layer: LayerRef, index: LayerIndex) -> None:
        """The rest of a layer read lazily, in runs on the background streams (behind what
        readers wait for), as stargz-snapshotter's background fetch does."""
        await load_pieces(reader, index.meta.uncompressed_size, Priority.BACKGROUND)
        log.info("%s: fetched whole in the background", layer)

    def prefetch_soon(self, layer: LayerRef, index: LayerIndex | LaidOutIndex) -> None:
        """Begin fetching what an eStargz image's builder marked as read first, if it
        marked anything (once per index: what is fetched is the index's chunks); from
        the moment its TOC is laid out, while its index is written. The stream of the
        blob's start, if any, is told how far the marked files go."""
        if not index.meta.prefetch_end:
            self.early.end(layer)
            return
        prefetch = functools.partial(self._prefetch, layer, index)
        if self._background.start_once("prefetch", layer, prefetch, key=index.path):
            marked = index.toc_chunks_between(0, index.meta.prefetch_end)
            self.early.want(
                layer,
                max((chunk.compressed_end for chunk in marked), default=0),
                min((chunk.compressed_offset for chunk in marked), default=0),
            )
        elif not self.early.told(layer):
            self.early.end(layer)  # begun by a build of an index prefetched before

    async def _prefetch(self, layer: LayerRef, index: LayerIndex | LaidOutIndex) -> None:
        """Fetch the chunks of the files an eStargz image's builder marked as read first
        (those before ``.prefetch.landmark``), as its other readers do. A failure stops it:
        the files are fetched when read, as any other."""
        end = index.meta.prefetch_end
        try:
            reader = run_reader_for(layer, index, self.context)
            await load_pieces(reader, end, Priority.BACKGROUND)
        finally:
            self.early.end(layer)
        log.info("%s: prefetched the first %d bytes its builder marked", layer, end)

    def prefetch_files(
        self, layer: LayerRef, index: LayerIndex, paths: Sequence[bytes], *, why: str = ""
    ) -> None:
        """Begin fetching the data of the files at ``paths`` that the layer holds, all at
        once, ahead of the reads expected soon: once per index for each ``why`` (the files
        every container's start reads, ``formats/start_files.py``, or those an image's
        start record names, ``start_reads.py``). A layer read whole has every piece on
        disk once indexed: nothing to do."""
        if index.meta.kind is not IndexKind.WHOLE:
            prefetch = functools.partial(self._prefetch_files, layer, index, paths, why)
            self._background.start_once(f"start files{why}", layer, prefetch, key=index.path)

    async def _prefetch_files(
        self, layer: LayerRef, index: LayerIndex, paths: Sequence[bytes], why: str
    ) -> None:
        files = files_in(index, paths)
        if files:
            ranges = [(file.data_offset, file.data_offset + file.size) for file in files]
            await reader_for(layer, index, self.context).prepare(ranges, Priority.AHEAD)
            if len(files) > NAMED_FILES:
                size = sum(file.size for file in files)
                log.info("%s: fetched %d files (%d bytes)%s", layer, len(files), size, why)
                return
            names = b", /".join(b"/".join(index.path_of(file.id)) for file in files)
            log.info("%s: fetched what a container's start reads%s: /%s", layer, why,
                     names.decode(errors="replace"))  # fmt: skip

    async def warm(self, layer: LayerRef, index: LayerIndex) -> None:
        """Load every piece of the layer, fetching and checking what the cache lacks."""
        reader = reader_for(layer, index, self.context)
        await load_pieces(reader, index.meta.uncompressed_size, Priority.WAITED)

    def ranges(self, layer: LayerRef) -> RangeFetch:
        """Range requests for ``layer`` sharing one deadline, ``--timeout`` from now or
        from the last bytes that came (a FUSE request's own scope may end them sooner):
        on a slow link a run of a few megabytes takes longer than ``--timeout``, and a
        zstd re-fetch many runs. Each names what it fetches for the timeout's message."""
        timeout = self._client.config.timeout
        give_up_at = trio.current_time() + timeout

        async def fetch(start: int, end: int, what: str) -> bytes:
            nonlocal give_up_at
            with trio.move_on_at(give_up_at) as scope, moved_by_progress(scope, timeout):
                try:
                    data = await self._client.get_blob_range(
                        layer.host, layer.repository, layer.digest, start, end,
                        urls=layer.descriptor.urls,
                    )  # fmt: skip
                finally:
                    give_up_at = scope.deadline
                self._received(layer, len(data))
                return data
            raise Unavailable(f"{layer}: {what}: nothing came for {timeout:g}s")

        return fetch

    async def _stream(
        self, layer: LayerRef, span: tuple[int, int], consume: Consumer
    ) -> None:  # fmt: skip
        async def counted(data: bytes) -> bool:
            self._received(layer, len(data))
            return await consume(data)

        await self._client.stream_blob_range(
            layer.host, layer.repository, layer.digest, span, counted,
            urls=layer.descriptor.urls,
        )  # fmt: skip
