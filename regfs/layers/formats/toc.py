"""Layers with a table of contents (eStargz, zstd:chunked): a file costs its own chunks.

Layers layer, pure. An eStargz layer is a valid gzip tar whose every file chunk starts a
gzip member of its own, followed by a TOC (``stargz.index.json``, gzipped, in a tar) and a
footer that says where the TOC starts. The layer descriptor's annotation
``containerd.io/snapshot/stargz/toc.digest`` (covered by the manifest's digest) is the
sha256 of the TOC's JSON, and each chunk entry carries the sha256 of its bytes: checking
both, regfs serves a file by fetching its chunks alone, never an unverified byte.

zstd:chunked (containers/storage, written by ``skopeo copy --dest-compress-format
zstd:chunked``) is the same idea with zstd frames: its annotations give the position of
its TOC (``offset:length:uncompressed length:type``) and the sha256 of the TOC's
compressed bytes, and its entries have the eStargz fields.

The layer's files are laid out here on a *virtual* stream (their chunks end to end, in TOC
order) so that the index keeps its one form: an entry's ``data_offset`` is where its bytes
start on that stream, and ``TocChunk`` rows say where each piece of the stream comes from.

Spec: github.com/containerd/stargz-snapshotter, docs/estargz.md.
"""

from __future__ import annotations

import base64
import functools
import io
import itertools
import json
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import zstandard

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.verify import verified
from regfs.layers.formats.compression import read_exactly
from regfs.layers.formats.tar import TYPE_NAMES, TarMember, within_ranges

TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
ZSTD_CHUNKED_ANNOTATIONS = (
    ("io.github.containers.zstd-chunked.manifest-checksum",
     "io.github.containers.zstd-chunked.manifest-position"),
    ("io.containers.zstd-chunked.manifest-checksum",  # skopeo ≤ 1.9, podman ≤ 4.3
     "io.containers.zstd-chunked.manifest-position"),
)  # fmt: skip
TOC_ANNOTATIONS = frozenset(
    {TOC_DIGEST_ANNOTATION} | {name for pair in ZSTD_CHUNKED_ANNOTATIONS for name in pair}
)
ESTARGZ = "estargz"
ZSTD_CHUNKED = "zstd:chunked"
TOC_FORMATS = frozenset({ESTARGZ, ZSTD_CHUNKED})
FOOTER_SIZE = 51
LEGACY_FOOTER_SIZE = 47
"""The footer of stargz before eStargz: the same offset, in a gzip header without the
``SG`` subfield."""
TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = b".prefetch.landmark"
HIDDEN_NAMES = frozenset({b"stargz.index.json", PREFETCH_LANDMARK, b".no.prefetch.landmark"})
"""Files eStargz adds to the layer's root for its own use: not the image's."""
MAX_TOC_SIZE = 16 << 20
"""Bytes of TOC JSON accepted: about 50 000 files. Parsed, a TOC takes about 5.3 times its
size in memory while the index is built (measured: 102 MiB for a 19 MiB TOC of 60 000
files), two layers at once; a layer with a bigger TOC is read whole instead."""
MAX_CHUNK_SIZE = 64 << 20
_DEVICES = frozenset({"char", "block"})
"""Types whose device numbers a TOC entry's ``devMajor`` and ``devMinor`` give."""


class TocChunk(NamedTuple):
    """A piece of the virtual stream: ``size`` bytes at ``virtual_offset``, made by
    decompressing the gzip member at ``[compressed_offset, compressed_end)`` of the blob
    (they come first in it), hashing to ``sha256``. A named tuple: a TOC makes one per
    chunk (12 766 for a Debian layer), and an index read one per chunk it returns."""

    virtual_offset: int
    size: int
    compressed_offset: int
    compressed_end: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class TocReference:
    """What a layer descriptor says of its TOC: the format, the digest to check it
    against, and for zstd:chunked where it lies (offset, length, uncompressed length)."""

    format: str
    digest: Digest
    position: tuple[int, int, int] | None = None


def toc_reference(annotations: dict[str, str]) -> TocReference | None:
    """The layer's TOC from its descriptor's annotations; None if it names none."""
    for checksum, position in ZSTD_CHUNKED_ANNOTATIONS:
        if checksum in annotations and position in annotations:
            return TocReference(
                ZSTD_CHUNKED, Digest.parse(annotations[checksum]),
                _position(annotations[position]),
            )  # fmt: skip
    if TOC_DIGEST_ANNOTATION in annotations:
        return TocReference(ESTARGZ, Digest.parse(annotations[TOC_DIGEST_ANNOTATION]))
    return None


def _position(value: str) -> tuple[int, int, int]:
    parts = value.split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts) or parts[3] != "1":
        raise MalformedContent(f"zstd:chunked TOC position {value!r}")
    offset, length, uncompressed = (int(part) for part in parts[:3])
    return offset, length, uncompressed


@dataclass(frozen=True, slots=True)
class Toc:
    members: list[TarMember]
    chunks: list[TocChunk]
    virtual_size: int
    prefetch_end: int = 0
    """The files before eStargz's ``.prefetch.landmark`` end here on the virtual stream:
    those the image's builder recorded as read first (0: none)."""


def toc_offset(tail: bytes, blob_size: int) -> tuple[int, int]:
    """Where the TOC starts and the footer's size, from the blob's last 51 bytes."""
    for size in (FOOTER_SIZE, LEGACY_FOOTER_SIZE):
        footer = tail[-size:]
        offset = _footer_offset(footer, size)
        if offset is not None:
            if not 0 <= offset < blob_size - size:
                raise MalformedContent(f"eStargz footer points outside the blob ({offset})")
            return offset, size
    raise MalformedContent("no eStargz footer at the end of the blob")


def _footer_offset(footer: bytes, size: int) -> int | None:
    """The TOC offset a footer of ``size`` bytes holds: a gzip header with an extra field
    (``SG`` + 22 bytes, or for the legacy footer the 22 bytes alone) of ``%016xSTARGZ``."""
    if len(footer) != size or footer[:4] != b"\x1f\x8b\x08\x04":
        return None
    extra_length = int.from_bytes(footer[10:12], "little")
    extra = footer[12 : 12 + extra_length]
    if size == FOOTER_SIZE:
        if extra_length != 26 or extra[:2] != b"SG" or extra[2:4] != b"\x16\x00":
            return None
        payload = extra[4:]
    else:
        if extra_length != 22:
            return None
        payload = extra
    if payload[16:] != b"STARGZ":
        return None
    try:
        return int(payload[:16], 16)
    except ValueError:
        return None


def read_toc(compressed: bytes, expected: Digest) -> list[dict[str, Any]]:
    """The TOC's entries from its gzipped tar, checked against the annotation's digest."""
    try:
        tar_bytes = zlib.decompressobj(31).decompress(compressed, MAX_TOC_SIZE + 1024 * 1024)
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            member = archive.next()
            if member is None or member.name != TOC_NAME or not member.isfile():
                raise MalformedContent(f"the TOC tar does not start with {TOC_NAME}")
            if member.size > MAX_TOC_SIZE:
                raise MalformedContent(f"TOC larger than {MAX_TOC_SIZE} bytes")
            extracted = archive.extractfile(member)
            raw = extracted.read() if extracted else b""
    except (zlib.error, tarfile.TarError, EOFError) as error:
        raise MalformedContent(f"TOC unreadable: {error}") from None
    if len(raw) != member.size:
        raise MalformedContent("TOC cut short")
    _check(raw, expected)
    return _entries(raw)


def read_zstd_chunked_toc(compressed: bytes, expected: Digest, size: int) -> list[dict[str, Any]]:
    """A zstd:chunked TOC's entries, its compressed bytes checked against the checksum."""
    _check(compressed, expected)
    if size > MAX_TOC_SIZE:
        raise MalformedContent(f"TOC larger than {MAX_TOC_SIZE} bytes")
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed))
        raw = read_exactly(reader, size + 1)
    except zstandard.ZstdError as error:
        raise MalformedContent(f"TOC unreadable: {error}") from None
    if len(raw) != size:
        raise MalformedContent(f"TOC of {len(raw)} bytes, the manifest says {size}")
    return _entries(raw)


def _check(data: bytes, expected: Digest) -> None:
    verified(data, expected, what="TOC")


def _entries(raw: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise MalformedContent(f"TOC is not JSON: {error}") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MalformedContent("TOC has no list of entries")
    return entries


def layout(entries: list[dict[str, Any]], toc_start: int) -> Toc:
    """The TOC's files as tar members on the virtual stream, and the chunks behind it."""
    starts = {_int(e, "offset") for e in entries if "offset" in e and e.get("type") != "dir"}
    offsets = sorted(starts | {toc_start})
    following = dict(itertools.pairwise(offsets))
    """Each chunk's start, to where the next chunk (or the TOC) starts: where it ends."""
    members: list[TarMember] = []
    chunks: list[TocChunk] = []
    position = 0
    prefetch_end = 0
    pending: _File | None = None
    for entry in entries:
        kind = entry.get("type")
        if kind == "chunk":
            if pending is None or entry.get("name") != pending.name:
                raise MalformedContent(f"TOC chunk of {entry.get('name')!r} follows no file")
            position += pending.add(entry, following, position)
            continue
        if pending is not None:
            pending.finish()
            pending = None
        if not isinstance(kind, str) or kind not in TYPE_NAMES:
            raise MalformedContent(f"TOC entry of unknown type {kind!r}")
        name = _str(entry, "name").encode()
        relative = name.removeprefix(b"./")
        if relative.strip(b"/") in HIDDEN_NAMES:
            if relative == PREFETCH_LANDMARK:
                prefetch_end = position
            continue
        member = _member(entry, kind, name, position)
        members.append(member)
        if kind == "reg" and member.size > 0:
            pending = _File(entry, member.size, chunks)
            position += pending.add(entry, following, position)
    if pending is not None:
        pending.finish()
    return Toc(members, chunks, position, prefetch_end)


class _File:
    """The chunks of one regular file, checked to cover it exactly, in order."""

    def __init__(self, entry: dict[str, Any], size: int, chunks: list[TocChunk]) -> None:
        self.name = entry.get("name")
        self.size = size
        self.covered = 0
        self._chunks = chunks

    def add(self, entry: dict[str, Any], following: dict[int, int], position: int) -> int:
        """Record the chunk ``entry`` at ``position``; its size. ``following``: each chunk
        start to the next one's or the TOC's (a chunk's gzip member ends where the next
        begins), every start in it checked already."""
        chunk_offset = _int(entry, "chunkOffset", 0)
        if chunk_offset != self.covered:
            raise MalformedContent(f"TOC chunks of {self.name!r} leave a gap or overlap")
        size = _int(entry, "chunkSize", 0) or self.size - chunk_offset
        if not 0 < size <= min(MAX_CHUNK_SIZE, self.size - chunk_offset):
            raise MalformedContent(f"TOC chunk of {self.name!r} has size {size}")
        start = entry.get("offset", -1)
        end = following.get(start) if type(start) is int else None
        if end is None:
            raise MalformedContent(f"TOC chunk of {self.name!r} has no offset before the TOC")
        # A file in one piece may carry only the whole file's digest (zstd:chunked).
        whole = "chunkDigest" not in entry and chunk_offset == 0 and size == self.size
        digest = _digest(entry, "digest" if whole else "chunkDigest")
        self._chunks.append(TocChunk(position, size, start, end, digest))
        self.covered += size
        return size

    def finish(self) -> None:
        if self.covered != self.size:
            raise MalformedContent(f"TOC chunks of {self.name!r} cover {self.covered} of "
                                   f"{self.size} bytes")  # fmt: skip


def _member(entry: dict[str, Any], kind: str, name: bytes, position: int) -> TarMember:
    """The TOC entry as a tar member, its numbers checked as a tar's are (``within_ranges``:
    a uid of 2⁴⁰ fits no stat and no index; a modtime in the year 9999 is clamped)."""
    member = TarMember(
        path=name,
        type=TYPE_NAMES[kind][0],
        mode=_int(entry, "mode", 0) & 0o7777,
        uid=_int(entry, "uid", 0),
        gid=_int(entry, "gid", 0),
        size=_int(entry, "size", 0) if kind == "reg" else 0,
        mtime_ns=_mtime_ns(entry.get("modtime"), name),
        linkname=_str(entry, "linkName", "").encode(),
        devmajor=_int(entry, "devMajor", 0) if kind in _DEVICES else 0,
        devminor=_int(entry, "devMinor", 0) if kind in _DEVICES else 0,
        data_offset=position,
        xattrs=_xattrs(entry.get("xattrs"), name),
    )
    return within_ranges(member)


def _xattrs(xattrs: object, name: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """A TOC entry's xattrs, base64 values decoded, by name."""
    if not xattrs:
        return ()
    if not isinstance(xattrs, dict):
        raise MalformedContent(f"TOC entry {name!r}: xattrs is not an object")
    try:
        return tuple(
            (key.encode(), base64.b64decode(value, validate=True))
            for key, value in sorted(xattrs.items())
            if isinstance(key, str) and isinstance(value, str)
        )
    except ValueError as error:  # binascii.Error, or a value or name that is no ASCII
        raise MalformedContent(f"TOC entry {name!r}: xattr not base64: {error}") from None


def _int(entry: dict[str, Any], key: str, default: int | None = None) -> int:
    value = entry.get(key, default)
    if type(value) is not int or not 0 <= value < 1 << 63:  # a bool is no size either
        raise MalformedContent(f"TOC entry {entry.get('name')!r}: {key} is not a size")
    return value


def _str(entry: dict[str, Any], key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or "\0" in value:
        raise MalformedContent(f"TOC entry: {key} is not a string")
    return value


def _digest(entry: dict[str, Any], key: str) -> bytes:
    """The 32 bytes of a ``sha256:`` and 64 lowercase hex digits (what ``bytes.fromhex``
    also takes, spaces or capitals, makes no 32 bytes of an all-lowercase 71 characters)."""
    value = entry.get(key)
    if type(value) is str and len(value) == 71 and value.startswith("sha256:") and \
            value.islower():  # fmt: skip
        try:
            digest = bytes.fromhex(value[7:])
        except ValueError:
            digest = b""
        if len(digest) == 32:
            return digest
    raise MalformedContent(f"TOC entry {entry.get('name')!r}: {key} is not a sha256 digest")


def _mtime_ns(value: object, name: bytes) -> int:
    if value is None:
        return 0
    if not isinstance(value, str):
        raise MalformedContent(f"TOC entry {name!r}: modtime is not a string")
    try:
        return _parsed_mtime_ns(value)
    except ValueError:
        raise MalformedContent(f"TOC entry {name!r}: modtime {value!r}") from None


@functools.lru_cache(maxsize=4096)
def _parsed_mtime_ns(value: str) -> int:
    """A TOC's modtime in nanoseconds. Cached: the files of a package share a few times."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def chunk_bytes(member: bytes, chunk: TocChunk, toc_format: str) -> bytes:
    """A chunk from its fetched gzip member (zstd frame): at most ``chunk.size`` bytes,
    exactly that many or ``MalformedContent`` (its digest is checked by the caller's
    verifying getter, ``layers/pieces.py``)."""
    try:
        if toc_format == ZSTD_CHUNKED:
            frame = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(member))
            data = read_exactly(frame, chunk.size)
        else:
            data = zlib.decompressobj(31).decompress(member, chunk.size)
    except (zlib.error, zstandard.ZstdError) as error:
        raise MalformedContent(f"chunk at {chunk.compressed_offset}: {error}") from None
    if len(data) != chunk.size:
        raise MalformedContent(
            f"chunk at {chunk.compressed_offset}: {len(data)} bytes, the TOC says {chunk.size}"
        )
    return data
