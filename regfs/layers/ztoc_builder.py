"""Making a SOCI zTOC from a gzip layer regfs has downloaded and verified.

Layers layer, blocking (for a worker thread). One pass through indexed_gzip lists the tar's
members and leaves seek points at deflate block boundaries about ``span_size`` apart, each
with its 32 KiB window (read from indexed_gzip's exported index, format version 1). Each
span is then inflated from its checkpoint as a SOCI reader would and compared with the
layer's bytes before its digest is recorded: a checkpoint that does not restart inflation
(one at a gzip member's header) or that would begin an empty span (the point indexed_gzip
records at the end of the stream, a second one at the same offset after an empty member) is
dropped, and a zTOC that would not read back right is never written.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import indexed_gzip

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.compression import DECOMPRESSION_ERRORS, read_exactly
from regfs.layers.formats.gzip_points import compressed_start, restartable, seek_points
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.formats.tar import REGULAR_TYPES, TYPE_NAMES, TarMember, TarScanner
from regfs.layers.formats.ztoc import (
    Checkpoint,
    Ztoc,
    ZtocFile,
    encode_checkpoints,
    members,
    parse_ztoc,
    spans,
)
from regfs.layers.formats.ztoc_encode import encode_ztoc

DEFAULT_SPAN_SIZE = 2 << 20
"""Half soci-snapshotter's 4 MiB: a python start on a 30 ms, 100 Mbit/s link fetched 0.32
of its layer and took 3.54 s instead of 0.38 and 4.37 s; a zTOC a third larger, which one
`cat` of a small file pays (5.9 MB instead of 5.1, 1.8 s instead of 1.7: benchmarks.md)."""
BUILD_TOOL = "regfs index push"
PROBE_BUFFER = 128 << 10
INDEXING_ERRORS: tuple[type[Exception], ...] = (
    *DECOMPRESSION_ERRORS,
    indexed_gzip.ZranError,
    indexed_gzip.NoHandleError,
    indexed_gzip.NotCoveredError,
)
"""What reading a layer through indexed_gzip raises for a blob it cannot inflate (only
``regfs index push`` imports indexed_gzip: a mount reads gzip through ``gzip_scan``)."""
_TYPES = {flag: name for name, flag in TYPE_NAMES.items()}


def build_ztoc(blob: Path, span_size: int = DEFAULT_SPAN_SIZE) -> bytes:
    """The zTOC of the gzip layer at ``blob`` (already checked against its digest)."""
    # indexed_gzip keeps its own place in the file it reads: spans are read through another
    with open(blob, "rb") as inflated, open(blob, "rb") as raw:
        size = raw.seek(0, 2)
        try:
            files, uncompressed_size, index = _scan(inflated, span_size)
            checkpoints = _restartable(inflated, raw, index, uncompressed_size)
            digests = _span_digests(inflated, raw, checkpoints, uncompressed_size)
        except INDEXING_ERRORS as error:
            raise MalformedContent(f"cannot make a zTOC: {error}") from None
    encoded = encode_ztoc(Ztoc(
        compressed_size=size, uncompressed_size=uncompressed_size, files=tuple(files),
        span_digests=tuple(digests), checkpoints=encode_checkpoints(span_size, checkpoints),
        build_tool=BUILD_TOOL,
    ))  # fmt: skip
    made = parse_ztoc(encoded)  # what a reader will refuse (a span over 64 MiB) is not pushed
    spans(made)
    members(made)
    return encoded


def _scan(inflated: BinaryIO, span_size: int) -> tuple[list[ZtocFile], int, bytes]:
    """The tar's members, its length, and indexed_gzip's index (its seek points with their
    windows)."""
    scanner = TarScanner()
    files = []
    gzip = indexed_gzip.IndexedGzipFile(
        fileobj=inflated, spacing=span_size, readbuf_size=1 << 20, auto_build=True
    )
    try:
        while chunk := gzip.read(1 << 20):
            files += [_ztoc_file(member) for member in scanner.feed(chunk) if _listed(member)]
        scanner.finish()
        uncompressed_size = gzip.tell()
        index_to_the_end(gzip)
        exported = io.BytesIO()
        gzip.export_index(fileobj=exported)
    finally:
        gzip.close()
    return files, uncompressed_size, exported.getvalue()


def _restartable(
    inflated: BinaryIO, raw: BinaryIO, index: bytes, uncompressed_size: int
) -> list[Checkpoint]:
    """Every point of ``index`` from which inflation restarts
    (``gzip_points.restartable``), probed from the index itself."""
    inflated.seek(0)
    gzip = probing_reader(inflated, index)
    try:
        return restartable(gzip, raw, seek_points(index), uncompressed_size)
    except MalformedContent as error:
        raise MalformedContent(f"cannot make a zTOC: {error}") from None
    finally:
        gzip.close()


def _span_digests(
    inflated: BinaryIO, raw: BinaryIO, checkpoints: list[Checkpoint], uncompressed_size: int
) -> list[str]:
    """Each span's digest, once it inflates to the layer's own bytes."""
    digests = []
    inflated.seek(0)
    gzip = indexed_gzip.IndexedGzipFile(fileobj=inflated, readbuf_size=1 << 20, auto_build=True)
    try:
        ends = [(c.compressed, c.uncompressed) for c in checkpoints[1:]]
        ends.append((raw.seek(0, 2), uncompressed_size))
        for checkpoint, (compressed_end, uncompressed_end) in zip(checkpoints, ends, strict=True):
            gzip.seek(checkpoint.uncompressed)
            expected = read_exactly(gzip, uncompressed_end - checkpoint.uncompressed)
            start = compressed_start(checkpoint)
            raw.seek(start)
            span = read_exactly(raw, compressed_end - start)
            made = inflate_from_checkpoint(span, checkpoint.bits, checkpoint.window,
                                           len(expected))  # fmt: skip
            if made != expected:
                raise MalformedContent(
                    f"cannot make a zTOC: the span at {checkpoint.uncompressed} does not "
                    "inflate to the layer's bytes"
                )
            digests.append(f"sha256:{hashlib.sha256(span).hexdigest()}")
    finally:
        gzip.close()
    return digests


def _listed(member: TarMember) -> bool:
    """Members a zTOC can name (soci refuses other tar types)."""
    return member.type in REGULAR_TYPES or bytes([member.type]) in _TYPES


def _ztoc_file(member: TarMember) -> ZtocFile:
    kind = "reg" if member.type in REGULAR_TYPES else _TYPES[bytes([member.type])]
    return ZtocFile(
        name=member.path, type=kind, offset=member.data_offset, size=member.size,
        linkname=member.linkname, mode=member.mode, uid=member.uid, gid=member.gid,
        mod_time=_rfc3339(member.mtime_ns), devmajor=member.devmajor,
        devminor=member.devminor,
        pax=tuple(sorted((b"SCHILY.xattr." + name, value) for name, value in member.xattrs)),
    )  # fmt: skip


def _rfc3339(mtime_ns: int) -> str:
    """As Go's ``time.MarshalText`` writes it in UTC (nanoseconds, trailing zeros cut)."""
    seconds, nanoseconds = divmod(mtime_ns, 10**9)
    try:
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "1970-01-01T00:00:00Z"  # beyond what RFC 3339 can say (years 1 to 9999)
    fraction = f".{nanoseconds:09d}".rstrip("0") if nanoseconds else ""
    return f"{text}{fraction}Z"


def index_to_the_end(file: indexed_gzip.IndexedGzipFile) -> None:
    """Give ``file``, read to its end, seek points up to its end. Reads are served from a
    buffer of a few MiB and the index is built only as far as they needed (a 6 MiB layer
    had no point but its first); reading the last byte again builds the rest.
    ``build_full_index`` would too, but inflates the whole stream again (0.5 s more on the
    1.0 s pass of a 60 MB layer)."""
    end = file.tell()
    if end:
        file.seek(end - 1)
        file.read(1)


def probing_reader(blob: BinaryIO, index: bytes) -> indexed_gzip.IndexedGzipFile:
    """A second handle on a gzip blob seeking from ``index`` (``GzipIndexer.export``) with
    small buffers, to read a few KiB after each point: the indexer's buffers inflate MiBs at
    every seek (0.49 s against 0.05 s for the 81 points of a 60 MB layer)."""
    reader = indexed_gzip.IndexedGzipFile(
        fileobj=blob, readbuf_size=PROBE_BUFFER, buffer_size=PROBE_BUFFER, auto_build=False
    )
    reader.import_index(fileobj=io.BytesIO(index))
    return reader
