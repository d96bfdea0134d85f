"""Building a layer's index: from its whole blob, its TOC, or its SOCI zTOC.

Layers layer. Each builder fetches what it needs, has the index written in a worker
thread (``index/build.py``: to a temporary file, published by rename) and counts the new
file in the cache. The whole blob is streamed to ``tmp/`` and checked against its digest
before it is indexed; a download cut off is kept there for the next read to go on from
(``kept_downloads.py``). A TOC or zTOC is checked against the digest its image names. A TOC
or zTOC that cannot be used is one warning and ``False``: the caller reads the layer whole.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Generic, TypeVar

import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.domain.errors import MalformedContent, RegfsError, Unavailable, VerificationFailed
from regfs.domain.manifest import Descriptor
from regfs.domain.verify import verified
from regfs.layers.blob_sink import HashedPrefix, VerifyingSink
from regfs.layers.download_lock import file_lock
from regfs.layers.early_bytes import EarlyStreams
from regfs.layers.formats.toc import FOOTER_SIZE, MAX_TOC_SIZE, toc_offset, toc_reference
from regfs.layers.formats.ztoc import MAX_ZTOC_SIZE, ztoc_sizes
from regfs.layers.index.build import build_index, build_soci_index, build_toc_index
from regfs.layers.index.files import IndexFiles, toc_inputs
from regfs.layers.index.index_file import opened
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.kept_downloads import KeptDownload, KeptDownloads
from regfs.layers.landing_blob import LandingBlob
from regfs.layers.layer_ref import LayerRef
from regfs.layers.reader_base import RangeFetch
from regfs.registry.client import RegistryClient
from regfs.registry.request_deadline import working

if TYPE_CHECKING:
    from outcome import Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

INDEXING_AT_ONCE = 1
"""Indexes built from a TOC or zTOC (or from a downloaded blob, after a place started over)
at once. They are Python, bound by the GIL: two at once gain nothing, and each waits for
the GIL after every SQLite step of its writes. A 62 KB TOC's index (23 ms alone) took
0.27 s beside a 707 KB one's; one at a time, 0.03 s. A first pass following its download
(``landing_blob.py``) is not counted here: it waits mostly for the network."""
FIRST_PASSES_AT_ONCE = 4
"""Layers downloaded and indexed at once, for the whole mount: bounds ``tmp/`` to as many
whole blobs, and keeps an image of 10 000 layers from opening 10 000 requests (its first
failure then cancels the rest before they start)."""
SKIPPED_SHOWN = 20
"""Skipped tar members named in the log, per layer."""


class IndexBuilders:
    def __init__(
        self,
        client: RegistryClient,
        chunks: ChunkCache,
        files: IndexFiles,
        layout: CacheLayout,
        *,
        ranges: Callable[[LayerRef], RangeFetch],
        served: Callable[[LayerRef], None],
        received: Callable[[LayerRef, int], None],
        laid_out: Callable[[LayerRef, LaidOutIndex], None],
        sized: Callable[[LayerRef, int], None],
        early: EarlyStreams,
    ) -> None:
        """``served`` is told of each layer whose bytes the registry served (it confirmed
        the repository has it); ``received`` of each piece of a blob that arrives;
        ``laid_out`` of a layer's size and pieces once its TOC or zTOC is read and checked,
        before its index is written (``index/laid_out.py``); ``sized`` of a SOCI layer's
        size as soon as its zTOC is fetched, before it is read whole. An eStargz layer's
        start is streamed on ``early`` while its TOC is fetched (``early_bytes.py``)."""
        self._client = client
        self._chunks = chunks
        self._files = files
        self._temporary_dir = layout.temporary
        self._lock_dir = layout.locks
        self._ranges = ranges
        self._served = served
        self._received = received
        self._laid_out = laid_out
        self._sized = sized
        self._early = early
        self._indexing = trio.CapacityLimiter(INDEXING_AT_ONCE)
        self._first_passes = trio.CapacityLimiter(FIRST_PASSES_AT_ONCE)
        self.fallbacks: dict[LayerRef, str] = {}
        """Why a layer's TOC or zTOC was not used: ``user.regfs.access`` says it."""
        self._kept = KeptDownloads()

    def close(self) -> None:
        """Remove the downloads kept to be resumed: the mount ends."""
        for kept in self._kept.take_all():
            kept.path.unlink(missing_ok=True)

    async def whole_once(self, layer: LayerRef) -> None:
        """The first pass, one process at a time: another mount or a ``regfs prefetch``
        on the same cache dir already downloading this layer is waited for (a lock file
        in ``locks/``), and its index used."""
        lock = self._lock_dir / f"{layer.digest.dir_name}.lock"
        async with file_lock(lock, str(layer), self._temporary_dir / layer.digest.hex):
            found = opened(self._files.whole(layer)[0], None)  # None: absent, or unusable
            if found is not None:  # (then deleted, or replaced by the build)
                found.connection.close()
                log.info("%s: indexed meanwhile by another process on this cache", layer)
                kept, expired = self._kept.take(layer)
                await self._remove([*expired, *([kept] if kept else [])])
                return
            async with self._first_passes:
                await self._whole(layer)

    async def _whole(self, layer: LayerRef) -> None:
        """Download the blob to ``tmp/`` (or the rest of it, after a download cut off) and
        index it as it lands (``landing_blob.py``: the index is written once the blob is
        verified), then delete it; if the download is cut off, keep what came."""
        kept, expired = self._kept.take(layer)
        await self._remove(expired)
        with trio.CancelScope(shield=True):  # a kept file taken is not to be lost
            blob, file, start = await trio.to_thread.run_sync(self._blob_file, layer, kept)
        with file:
            landing = LandingBlob(blob, layer.descriptor.size, landed=start.size if start else 0)
            sink = VerifyingSink(
                file, layer, self._chunks, self._received, landing=landing, start=start
            )
            indexing = InThread(functools.partial(
                build_index, blob, self._files.whole(layer)[0], str(layer.digest), self._chunks,
                landing=landing,
            ))  # fmt: skip
            cut: HashedPrefix | None = None
            try:
                try:
                    await self._client.download_blob(
                        layer.host, layer.repository, layer.digest, sink,
                        urls=layer.descriptor.urls, resume_from=sink.stored,
                    )  # fmt: skip
                    await sink.finish()
                except BaseException as error:
                    landing.abandon()
                    cut = _worth_keeping(layer, sink, error)
                    raise
                landing.complete()
                self._served(layer)
                with working():
                    built = await indexing.outcome()
                if landing.abandoned:  # started over at another place: index the file now
                    await self._index_blob(layer, blob)
                else:
                    _log_skipped(layer, _unwrapped(layer, built))
            finally:
                with trio.CancelScope(shield=True):  # an abandoned pass ends at its next read
                    await indexing.outcome()
                # shielded: the request's scope may have ended, and its error must not
                # become a Cancelled that says nothing of the registry call it cut off
                with trio.CancelScope(shield=True):
                    await self._after_download(layer, blob, sink.stored, cut)

    def _blob_file(
        self, layer: LayerRef, kept: KeptDownload | None
    ) -> tuple[Path, BinaryIO, HashedPrefix | None]:
        """The file the blob is downloaded to, open for writing at the end of what it holds
        (in a worker thread): the kept file of a download cut off, or a new one."""
        if kept is not None:
            try:
                file = open(kept.path, "r+b")  # noqa: SIM115 (closed by the caller)
            except FileNotFoundError:  # removed as stale by another process's start
                self._chunks.note_growth(-kept.prefix.size)
            else:
                file.truncate(kept.prefix.size)  # a write that failed midway
                file.seek(kept.prefix.size)
                log.info("%s: going on with its download cut off at byte %d", layer,
                         kept.prefix.size)  # fmt: skip
                return kept.path, file, kept.prefix
        # named as download_lock.Landing watches it from other processes
        blob = self._temporary_dir / f"{layer.digest.hex}.{os.getpid()}.{secrets.token_hex(4)}"
        return blob, open(blob, "wb"), None

    async def _after_download(
        self, layer: LayerRef, blob: Path, stored: int, cut: HashedPrefix | None
    ) -> None:
        """Keep the blob's file if its download was cut off (still counted), else delete
        it; count the index written instead."""
        dropped = []
        if cut is None:
            blob.unlink(missing_ok=True)
        else:
            dropped = self._kept.keep(layer, blob, cut)
            stored = 0
            log.info("%s: download cut off after %d bytes, kept for the next read to go on",
                     layer, cut.size)  # fmt: skip
        growth = _size_of(self._files.whole(layer)[0]) - stored
        await trio.to_thread.run_sync(self._chunks.note_growth, growth)
        await self._remove(dropped)

    async def _remove(self, dropped: list[KeptDownload]) -> None:
        """Delete kept downloads no longer kept, and uncount them (shielded: they are
        forgotten already, and would stay until the mount ends)."""
        if dropped:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._remove_now, dropped)

    def _remove_now(self, dropped: list[KeptDownload]) -> None:
        for kept in dropped:
            kept.path.unlink(missing_ok=True)
            self._chunks.note_growth(-kept.prefix.size)

    async def _index_blob(self, layer: LayerRef, blob: Path) -> None:
        """Index a verified blob in a worker thread, and log what it skipped."""
        async with self._indexing:
            try:
                with working():
                    warnings = await trio.to_thread.run_sync(
                        build_index, blob, self._files.whole(layer)[0], str(layer.digest),
                        self._chunks,
                    )  # fmt: skip
            except MalformedContent as error:
                raise MalformedContent(f"{layer}: {error}") from None
        _log_skipped(layer, warnings)

    async def from_toc(self, layer: LayerRef, path: Path) -> bool:
        """Index an eStargz or zstd:chunked layer from its TOC alone, fetched by Range
        requests; False if it has none, or one that cannot be used (logged: the layer is
        then read whole, and checked against its digest). A stream of an eStargz blob's
        start begun here goes if the TOC is not used."""
        size = layer.descriptor.size
        built = False
        try:
            reference = toc_reference(dict(layer.descriptor.annotations))
            if reference is None or size is None or size <= FOOTER_SIZE:
                return False
            fetch = self._ranges(layer)
            if reference.position is not None:  # zstd:chunked: the annotation says where
                start, length, _ = reference.position
                end = start + length
            else:
                self._early.begin(layer, size)
                tail = await fetch(size - FOOTER_SIZE, size, "eStargz footer not fetched")
                start, footer_size = toc_offset(tail, size)
                end = size - footer_size
            if not 0 <= start < end <= size or end - start > MAX_TOC_SIZE:
                raise MalformedContent(f"TOC at [{start}, {end}) of a {size}-byte blob")
            toc = await fetch(start, end, f"{reference.format} TOC not fetched")
            warnings = await self._in_indexing_thread(functools.partial(
                build_toc_index, toc, path, reference=reference, toc_start=start,
                digest=str(layer.digest), size=size, built_from=f"toc {toc_inputs(layer)}",
                before_writing=self._laid_out_from_thread(layer),
            ))  # fmt: skip
            built = True
        except (MalformedContent, VerificationFailed) as error:
            log.warning("%s: TOC not used (%s): reading the whole layer", layer, error)
            self.fallbacks[layer] = f"its TOC was not used: {error}"
            return False
        finally:
            if not built:
                self._early.end(layer)
        await self._indexed(layer, path, f"its {reference.format} TOC", len(toc), warnings)
        return True

    async def from_ztoc(self, layer: LayerRef, ztoc: Descriptor, path: Path) -> bool:
        """Index a gzip layer from its SOCI zTOC (one blob fetch); False if the zTOC cannot
        be used (logged: the layer is then read whole, and checked against its digest)."""
        try:
            size = min(ztoc.size or MAX_ZTOC_SIZE, MAX_ZTOC_SIZE)
            data = await self._client.get_blob(layer.host, layer.repository, ztoc.digest, size)
            verified(data, ztoc.digest, size=ztoc.size, what=f"zTOC {ztoc.digest}")
            compressed, uncompressed = ztoc_sizes(data)
            if compressed == layer.descriptor.size and uncompressed >= 0:  # else refused below
                self._sized(layer, uncompressed)  # podman's ``info`` waits for it
            warnings = await self._in_indexing_thread(functools.partial(
                build_soci_index, data, path, digest=str(layer.digest),
                size=layer.descriptor.size, built_from=f"ztoc {ztoc.digest}",
                before_writing=self._laid_out_from_thread(layer),
            ))  # fmt: skip
        except Unavailable:
            raise  # the registry may answer later: no verdict on the zTOC
        except RegfsError as error:  # not parsed, not there, refused: the blob is still read
            log.warning("%s: SOCI zTOC not used (%s): reading the whole layer", layer, error)
            self.fallbacks[layer] = f"its SOCI zTOC {ztoc.digest} was not used: {error}"
            return False
        await self._indexed(layer, path, f"its SOCI zTOC {ztoc.digest}", len(data), warnings)
        return True

    def _laid_out_from_thread(self, layer: LayerRef) -> Callable[[LaidOutIndex], None]:
        """``laid_out`` for ``layer``, called from the indexing thread."""
        return lambda index: trio.from_thread.run_sync(self._laid_out, layer, index)

    async def _in_indexing_thread(self, build: Callable[[], list[str]]) -> list[str]:
        async with self._indexing:
            with working():
                return await trio.to_thread.run_sync(build)

    async def _indexed(
        self, layer: LayerRef, path: Path, source: str, fetched: int, warnings: list[str]
    ) -> None:
        """Count a new index in the cache and say where it came from."""
        self._served(layer)
        await trio.to_thread.run_sync(self._chunks.note_growth, _size_of(path))
        log.info("%s: indexed from %s (%d bytes fetched)", layer, source, fetched)
        _log_skipped(layer, warnings)


class InThread(Generic[T]):
    """``work`` begun now in a thread of its own, its outcome awaited later: a first pass
    that follows its download. Not cancellable: it ends when its blob is complete or
    abandoned."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._ended = trio.Event()
        self._outcome: Outcome[T] | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(outcome: Outcome[T]) -> None:
            self._outcome = outcome
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._ended.set)

        trio.lowlevel.start_thread_soon(work, deliver)

    async def outcome(self) -> Outcome[T]:
        await self._ended.wait()
        assert self._outcome is not None
        return self._outcome


def _worth_keeping(
    layer: LayerRef, sink: VerifyingSink, error: BaseException
) -> HashedPrefix | None:
    """What a failed download leaves to go on from: its bytes, unless they are wrong, or
    all there (nothing is left to ask for: the next read starts over)."""
    size = layer.descriptor.size
    if isinstance(error, VerificationFailed) or size is None or not 0 < sink.stored < size:
        return None
    return sink.stored_prefix()


def _unwrapped(layer: LayerRef, built: Outcome[list[str]]) -> list[str]:
    """The warnings of a first pass, or the error that stopped it, naming the layer."""
    try:
        return built.unwrap()
    except MalformedContent as error:
        raise MalformedContent(f"{layer}: {error}") from None


def _log_skipped(layer: LayerRef, warnings: list[str]) -> None:
    for warning in warnings[:SKIPPED_SHOWN]:
        log.warning("%s: %s", layer, warning)
    if len(warnings) > SKIPPED_SHOWN:
        log.warning("%s: %d more members skipped", layer, len(warnings) - SKIPPED_SHOWN)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
