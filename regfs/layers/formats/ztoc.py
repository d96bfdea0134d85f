"""SOCI zTOCs: the table of contents and gzip checkpoints of an unmodified layer.

Layers layer, pure. A SOCI index (awslabs/soci-snapshotter) gives a gzip layer a zTOC: a
FlatBuffer (schema ``ztoc/fbs/ztoc.fbs``) listing the tar's members, where each member's
data lies in the uncompressed tar, and *spans*: checkpoints at deflate block boundaries,
each with the 32 KiB window that restarts inflation there, and the sha256 of each span's
compressed bytes. A read then fetches the spans it touches and checks each against its
digest before inflating it.

The checkpoints field is SOCI's own "zinfo" layout (little-endian): ``int32 count``,
``int64 span size``, then per checkpoint ``int64 compressed offset`` (the first whole byte
after the block boundary), ``int64 uncompressed offset``, ``uint8 bits`` (how many bits of
the byte before belong to the next block) and the 32 KiB window, zero-padded in front.
The older layout leaves out checkpoint 0, which then sits right after a 10-byte header.

Span ``i`` is compressed bytes ``[in_i - (1 if bits_i else 0), in_{i+1})`` (the last ends
with the blob) and uncompressed bytes ``[out_i, out_{i+1})`` (the last ends with the tar).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.layers.formats.flatbuffer import Columns, Row, Table
from regfs.layers.formats.tar import TYPE_NAMES, TarMember, within_ranges, xattrs_of_pax

WINDOW_SIZE = 32 << 10
MAX_ZTOC_SIZE = 64 << 20
"""Bytes of zTOC accepted (soci writes ~100 bytes a file and 32 KiB a span)."""
MAX_SPAN_SIZE = 64 << 20
"""Uncompressed bytes of one span: a span is inflated whole into memory."""
MAX_FILES = 1_000_000
GZIP = 1
_HEADER = struct.Struct("<iq")
_CHECKPOINT = struct.Struct("<qqB")
_CHECKPOINT_SIZE = _CHECKPOINT.size + WINDOW_SIZE
_LEGACY_FIRST = (10, 0, 0)


class ZtocFile(NamedTuple):
    """One tar member as a zTOC records it (``pax`` holds all of its PAX records). A named
    tuple: a zTOC makes one per member."""

    name: bytes
    type: str
    offset: int
    """Where the member's data starts in the uncompressed tar."""
    size: int
    linkname: bytes = b""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    uname: bytes = b""
    gname: bytes = b""
    mod_time: str = "1970-01-01T00:00:00Z"
    devmajor: int = 0
    devminor: int = 0
    pax: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    compressed: int
    uncompressed: int
    bits: int
    window: bytes


@dataclass(frozen=True, slots=True)
class Ztoc:
    compressed_size: int
    uncompressed_size: int
    files: tuple[ZtocFile, ...]
    span_digests: tuple[str, ...]
    checkpoints: bytes
    """The zinfo blob (see the module docstring)."""
    algorithm: int = GZIP
    version: str = "0.9"
    build_tool: str = "regfs"


@dataclass(frozen=True, slots=True)
class Span:
    """Uncompressed bytes ``[uncompressed, uncompressed + size)`` of the layer, made by
    inflating compressed bytes ``[compressed_start, compressed_end)`` (hashing to
    ``sha256``) from a checkpoint: the first ``bits`` bits come from its first byte's top,
    with ``window`` as the history."""

    uncompressed: int
    size: int
    compressed_start: int
    compressed_end: int
    sha256: bytes
    bits: int
    window: bytes


def parse_ztoc(data: bytes) -> Ztoc:
    """The zTOC in ``data``; MalformedContent if it is not a well-formed one."""
    root = _root(data, budget=2 * len(data) + (1 << 20))
    toc = root.table(4)
    info = root.table(5)
    if toc is None or info is None:
        raise MalformedContent("zTOC without a TOC or compression info")
    files: list[ZtocFile] = []
    for row in toc.rows(0, FILE_COLUMNS):
        if len(files) == MAX_FILES:
            raise MalformedContent(f"zTOC lists more than {MAX_FILES} files")
        files.append(_file(row))
    return Ztoc(
        version=root.blob(0).decode("utf-8", "replace"),
        build_tool=root.blob(1).decode("utf-8", "replace"),
        compressed_size=root.scalar(2, "<q"),
        uncompressed_size=root.scalar(3, "<q"),
        files=tuple(files),
        algorithm=info.scalar(0, "<b", GZIP),
        span_digests=tuple(d.decode("ascii", "replace") for d in info.strings(2)),
        checkpoints=info.blob(3),
    )


def ztoc_sizes(data: bytes) -> tuple[int, int]:
    """The compressed and uncompressed sizes a zTOC gives its layer, read from its root
    alone (what ``parse_ztoc`` reads whole, and checks, in tens of milliseconds)."""
    root = _root(data, budget=1 << 10)
    return root.scalar(2, "<q"), root.scalar(3, "<q")


def _root(data: bytes, budget: int) -> Table:
    """The zTOC's root table, unless the zTOC is larger than regfs reads."""
    if len(data) > MAX_ZTOC_SIZE:
        raise MalformedContent(f"zTOC of {len(data)} bytes (at most {MAX_ZTOC_SIZE})")
    return Table.root(data, budget=budget)


FILE_COLUMNS = Columns(
    blobs=(0, 1, 4, 8, 9, 10),
    scalars=((2, "<q"), (3, "<q"), (5, "<q"), (6, "<I"), (7, "<I"), (11, "<q"), (12, "<q")),
    tables=(13,),
)
"""The fields of ztoc.fbs's FileMetadata: name, type, linkname, uname, gname, mod_time;
uncompressed_offset, uncompressed_size, mode, uid, gid, devmajor, devminor; xattrs."""


def _file(row: Row) -> ZtocFile:
    name, kind, linkname, uname, gname, mod_time = row.blobs
    offset, size, mode, uid, gid, devmajor, devminor = row.scalars
    (pax,) = row.tables
    return ZtocFile(
        name, kind.decode("ascii", "replace"), offset, size, linkname, mode, uid, gid, uname,
        gname, mod_time.decode("ascii", "replace"), devmajor, devminor,
        tuple((pair.blob(0), pair.blob(1)) for pair in pax),
    )  # fmt: skip


def parse_checkpoints(blob: bytes) -> list[Checkpoint]:
    """The checkpoints of a gzip zTOC (either zinfo layout)."""
    if len(blob) < _HEADER.size:
        raise MalformedContent(f"zTOC checkpoints of {len(blob)} bytes")
    count, _ = _HEADER.unpack_from(blob)
    body = len(blob) - _HEADER.size
    if count < 1 or body not in {count * _CHECKPOINT_SIZE, (count - 1) * _CHECKPOINT_SIZE}:
        raise MalformedContent(f"zTOC checkpoints: {count} do not fit in {len(blob)} bytes")
    checkpoints = []
    if body != count * _CHECKPOINT_SIZE:  # the older layout: checkpoint 0 implied
        checkpoints.append(Checkpoint(*_LEGACY_FIRST, bytes(WINDOW_SIZE)))
    for position in range(_HEADER.size, len(blob), _CHECKPOINT_SIZE):
        compressed, uncompressed, bits = _CHECKPOINT.unpack_from(blob, position)
        window = blob[position + _CHECKPOINT.size : position + _CHECKPOINT_SIZE]
        checkpoints.append(Checkpoint(compressed, uncompressed, bits, window))
    return checkpoints


def encode_checkpoints(span_size: int, checkpoints: list[Checkpoint]) -> bytes:
    parts = [_HEADER.pack(len(checkpoints), span_size)]
    for checkpoint in checkpoints:
        window = checkpoint.window[-WINDOW_SIZE:].rjust(WINDOW_SIZE, b"\0")
        parts.append(_CHECKPOINT.pack(checkpoint.compressed, checkpoint.uncompressed,
                                      checkpoint.bits) + window)  # fmt: skip
    return b"".join(parts)


def spans(ztoc: Ztoc) -> list[Span]:
    """The spans of a gzip zTOC, checked to tile the layer in order."""
    if ztoc.algorithm != GZIP:
        raise MalformedContent(f"zTOC of compression {ztoc.algorithm}: only gzip is read")
    checkpoints = parse_checkpoints(ztoc.checkpoints)
    if len(ztoc.span_digests) != len(checkpoints):
        raise MalformedContent(
            f"zTOC has {len(checkpoints)} checkpoints and {len(ztoc.span_digests)} span digests"
        )
    if checkpoints[0].uncompressed != 0:
        raise MalformedContent("zTOC's first checkpoint is not at the start of the tar")
    ends = [(c.compressed, c.uncompressed) for c in checkpoints[1:]]
    ends.append((ztoc.compressed_size, ztoc.uncompressed_size))
    result = []
    for checkpoint, (compressed_end, uncompressed_end), digest in zip(
        checkpoints, ends, ztoc.span_digests, strict=True
    ):
        start = checkpoint.compressed - (1 if checkpoint.bits else 0)
        size = uncompressed_end - checkpoint.uncompressed
        if not (0 <= checkpoint.bits <= 7 and 0 <= start < compressed_end
                <= ztoc.compressed_size and 0 < size <= MAX_SPAN_SIZE
                and compressed_end - start <= _most_compressed(size)):  # fmt: skip
            raise MalformedContent(
                f"zTOC span at {checkpoint.uncompressed}: compressed [{start}, {compressed_end})"
                f", {size} bytes"
            )
        result.append(Span(checkpoint.uncompressed, size, start, compressed_end,
                           _sha256(digest), checkpoint.bits, checkpoint.window))  # fmt: skip
    return result


def _most_compressed(size: int) -> int:
    """The most compressed bytes ``size`` bytes of output can take: stored blocks (5 bytes
    per 64 KiB), plus a gzip member's header and trailer or two (a span may cross one)."""
    return size + size // 1024 + (64 << 10)


def _sha256(digest: str) -> bytes:
    try:
        parsed = Digest.parse(digest)
    except ValueError:
        parsed = None
    if parsed is None or parsed.algorithm != "sha256":
        raise MalformedContent(f"zTOC span digest {digest[:80]!r} is not a sha256 digest")
    return bytes.fromhex(parsed.hex)


_TYPEFLAGS = {name: flag[0] for name, flag in TYPE_NAMES.items()}


def members(ztoc: Ztoc) -> list[TarMember]:
    """The zTOC's files as tar members (data offsets into the uncompressed tar), checked
    to lie within it. Positional and with no PAX work for files without records: a
    Debian layer's 8 743 files took 22 ms with keywords, 12 ms so."""
    result = []
    for file in ztoc.files:
        name, kind, offset = file.name, file.type, file.offset
        typeflag = _TYPEFLAGS.get(kind)
        if typeflag is None:
            raise MalformedContent(f"zTOC file {name[:200]!r} of type {kind[:20]!r}")
        size = file.size if kind == "reg" else 0
        if offset < 0 or size < 0 or offset + size > ztoc.uncompressed_size:
            raise MalformedContent(f"zTOC file {name[:200]!r} lies outside the layer")
        xattrs = _xattrs(file.pax) if file.pax else ()
        member = TarMember(
            name, typeflag, file.mode & 0o7777, file.uid, file.gid, size,
            _mtime_ns(file.mod_time, name), file.linkname, file.devmajor, file.devminor,
            offset, xattrs,
        )  # fmt: skip
        result.append(within_ranges(member))
    return result


def _xattrs(pax: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    return xattrs_of_pax({key.decode("utf-8", "surrogateescape"): value for key, value in pax})


def _mtime_ns(text: str, name: bytes) -> int:
    try:
        return _parsed_mtime_ns(text)
    except (ValueError, OverflowError):
        raise MalformedContent(f"zTOC file {name[:200]!r}: mod_time {text[:40]!r}") from None


@functools.lru_cache(maxsize=4096)
def _parsed_mtime_ns(text: str) -> int:
    """RFC 3339 with up to nanoseconds (Go's ``time.MarshalText``), any UTC offset; one out
    of range is clamped by ``within_ranges``. Cached: the files of a package share a few
    times (a Debian layer's 8 700 files took 24 ms here uncached)."""
    main, _, rest = text.partition(".")
    fraction = ""
    zone = ""
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    else:
        main, zone = (main[:-1], "Z") if main.endswith("Z") else (main[:-6], main[-6:])
    when = datetime.fromisoformat(main + ("+00:00" if zone in {"Z", "z"} else zone))
    return int(when.timestamp()) * 10**9 + int((fraction or "0")[:9].ljust(9, "0"))
