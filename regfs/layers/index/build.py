"""The verified first pass over a layer: chunks, tar index and checkpoints in one read.

Layers layer. Blocking: runs in a worker thread on a blob already downloaded and checked
against its digest. The uncompressed stream is cut into ``CHUNK_SIZE`` chunks, each
hashed and stored in the chunk cache, while the same bytes feed the tar scanner; the
index is published only when all of it succeeded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from regfs.cache.chunks import ChunkCache
from regfs.domain.errors import MalformedContent
from regfs.layers.formats.compression import (
    DECOMPRESSION_ERRORS,
    GZIP_SPACING,
    ZstdIndexer,
    open_for_indexing,
    read_exactly,
    sniff,
)
from regfs.layers.formats.entries import MAX_MEMBERS, IndexEntry, LayerTreeBuilder
from regfs.layers.formats.gzip_points import compressed_start, restartable
from regfs.layers.formats.gzip_scan import GzipScanner, RecordedHeads
from regfs.layers.formats.tar import TarMember, TarScanner
from regfs.layers.formats.toc import (
    ZSTD_CHUNKED,
    TocChunk,
    TocReference,
    layout,
    read_toc,
    read_zstd_chunked_toc,
)
from regfs.layers.formats.ztoc import Checkpoint, members, parse_ztoc, spans
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.meta import SOCI_COMPRESSION, IndexMeta
from regfs.layers.index.write import write_index
from regfs.layers.landing_blob import BlobAbandoned, LandingBlob

CHUNK_SIZE = 1 << 20
ENTRIES_TOLD = 200_000
"""Entries of a layer's tree held in memory while they are written, at most (a layer
store's lookups are answered from them meanwhile): ~100 MB more with the tree's own."""


def build_index(
    blob: Path, index_path: Path, digest: str, chunks: ChunkCache,
    *, landing: LandingBlob | None = None,
) -> list[str]:  # fmt: skip
    """Index the verified blob at ``blob`` into ``index_path``; returns warnings to log.

    Besides the tree and each chunk's hash, it records where decompression restarts: gzip
    checkpoints (with their windows, each checked to restart inflation) ``GZIP_SPACING``
    apart, zstd frame starts, and for zstd how far into the blob each chunk's output
    reaches, so that a chunk is made again from one Range request.

    ``landing``: the blob is still downloading, and is read as it lands; the index is
    written only once the blob is verified.
    """
    with _opened(blob, landing) as raw:
        compression = sniff(raw.read(4))
        raw.seek(0)
        stream = open_for_indexing(raw, compression)
        scanner = TarScanner()
        tree = LayerTreeBuilder()
        hashes: list[bytes] = []
        chunk_ends: list[int] = []
        try:
            while chunk := read_exactly(stream, CHUNK_SIZE):
                sha256 = hashlib.sha256(chunk).digest()
                chunks.put(sha256, chunk)
                hashes.append(sha256)
                if isinstance(stream, ZstdIndexer):
                    chunk_ends.append(stream.consumed())
                for member in scanner.feed(chunk):
                    tree.add(member)
            scanner.finish()
            if landing is not None:  # before the restart points open the blob's file
                landing.wait_verified()
            checkpoints: list[tuple[int, int]] = [(0, 0)]
            span_starts: list[tuple[int, int, bytes]] = []
            if isinstance(stream, ZstdIndexer):
                checkpoints = stream.checkpoints()
            if isinstance(stream, GzipScanner):
                points = _gzip_restart_points(stream, blob, scanner.offset)
                checkpoints = [(point.uncompressed, compressed_start(point)) for point in points]
                span_starts = [(point.uncompressed, point.bits, point.window) for point in points]
        except DECOMPRESSION_ERRORS as error:
            if landing is not None and landing.abandoned:  # not the blob's fault
                raise BlobAbandoned(f"{blob.name}: its download was abandoned") from None
            raise MalformedContent(f"cannot decompress ({compression}): {error}") from None
        finally:
            if isinstance(stream, GzipScanner):
                stream.close()
        compressed_size = raw.seek(0, 2)
    meta = IndexMeta(digest, compression, compressed_size, scanner.offset, CHUNK_SIZE)
    write_index(
        index_path, meta=meta, entries=tree.entries(), chunk_hashes=hashes,
        checkpoints=checkpoints, chunk_ends=chunk_ends, span_starts=span_starts,
    )  # fmt: skip
    return tree.warnings


def _opened(blob: Path, landing: LandingBlob | None) -> BinaryIO:
    """The blob for the first pass; a landing blob's reader reads, seeks and tells as a
    file does."""
    if landing is not None:
        return cast(BinaryIO, landing.open())
    return open(blob, "rb")


def _gzip_restart_points(stream: GzipScanner, blob: Path, size: int) -> list[Checkpoint]:
    """The checkpoints the pass recorded that restart inflation, ``GZIP_SPACING`` apart,
    each tried on the blob against the output the pass kept after it."""
    with open(blob, "rb") as raw:
        heads = RecordedHeads(stream.heads)
        return restartable(heads, raw, stream.points, size, spacing=GZIP_SPACING)


def build_toc_index(
    toc: bytes,
    index_path: Path,
    *,
    reference: TocReference,
    toc_start: int,
    digest: str,
    size: int,
    built_from: str,
    before_writing: Callable[[LaidOutIndex], None] = lambda laid_out: None,
) -> list[str]:
    """Index an eStargz or zstd:chunked layer from its TOC alone; returns warnings to log.
    The index's ``compression`` is the TOC's format: its data offsets are on the virtual
    stream of ``toc.py``, read through ``toc_chunks``. ``before_writing`` is told the
    layer's size and pieces once they are sure, then its entries, before the index is
    written (``_tree_telling``)."""
    if reference.format == ZSTD_CHUNKED and reference.position is not None:
        toc_entries = read_zstd_chunked_toc(toc, reference.digest, reference.position[2])
    else:
        toc_entries = read_toc(toc, reference.digest)
    laid_out = layout(toc_entries, toc_start)
    meta = IndexMeta(
        digest, reference.format, size, laid_out.virtual_size, 0, laid_out.prefetch_end,
        built_from,
    )  # fmt: skip
    entries, warnings = _tree_telling(
        laid_out.members, LaidOutIndex(index_path, meta, laid_out.chunks), before_writing
    )
    write_index(
        index_path, meta=meta, entries=entries, chunk_hashes=(), checkpoints=(),
        toc_chunks=laid_out.chunks,
    )  # fmt: skip
    return warnings


def build_soci_index(
    ztoc_bytes: bytes,
    index_path: Path,
    *,
    digest: str,
    size: int | None,
    built_from: str,
    before_writing: Callable[[LaidOutIndex], None] = lambda laid_out: None,
) -> list[str]:
    """Index a gzip layer of ``size`` bytes from its SOCI zTOC alone; returns warnings to
    log. Data offsets are the tar's own; ``toc_chunks`` rows are the zTOC's spans (their
    sha256 is that of the compressed span) and ``span_starts`` their checkpoints.
    ``before_writing`` is told the layer's size and spans once the zTOC is checked and
    they are sure, then its entries, before the index is written (``_tree_telling``)."""
    ztoc = parse_ztoc(ztoc_bytes)
    if size is not None and ztoc.compressed_size != size:
        raise MalformedContent(f"zTOC describes a blob of {ztoc.compressed_size} bytes, not {size}")
    layer_spans = spans(ztoc)
    chunks = [TocChunk(s.uncompressed, s.size, s.compressed_start, s.compressed_end, s.sha256)
              for s in layer_spans]  # fmt: skip
    span_starts = [(s.uncompressed, s.bits, s.window) for s in layer_spans]
    meta = IndexMeta(
        digest, SOCI_COMPRESSION, ztoc.compressed_size, ztoc.uncompressed_size, 0,
        built_from=built_from,
    )  # fmt: skip
    entries, warnings = _tree_telling(
        members(ztoc), LaidOutIndex(index_path, meta, chunks, span_starts), before_writing
    )
    write_index(
        index_path, meta=meta, entries=entries, chunk_hashes=(), checkpoints=(),
        toc_chunks=chunks, span_starts=span_starts,
    )  # fmt: skip
    return warnings


def _tree_telling(
    members: Sequence[TarMember], laid_out: LaidOutIndex, tell: Callable[[LaidOutIndex], None]
) -> tuple[Iterable[IndexEntry], list[str]]:
    """The entries of the members' tree, and what it skipped. ``tell`` is told
    ``laid_out`` as soon as the layer's size and pieces are sure: before the tree is made
    when it cannot fail (it refuses only more than ``MAX_MEMBERS`` members), so that what
    waits for them (a layer store's ``info``, an eStargz prefetch) does not wait for the
    tree too (50-80 ms of a big layer); then once more with the tree's entries, for
    lookups and reads to be answered from memory while they are written, unless there
    are more than ``ENTRIES_TOLD`` (they are then written as they are made, never held
    twice)."""
    sure = len(members) <= MAX_MEMBERS
    if sure:
        tell(laid_out)
    tree = LayerTreeBuilder()
    for member in members:
        tree.add(member)
    if not sure:
        tell(laid_out)
    if tree.members > ENTRIES_TOLD:
        return tree.entries(), tree.warnings
    entries = list(tree.entries())
    tell(laid_out.with_entries(entries))
    return entries, tree.warnings
