"""SOCI zTOCs: the FlatBuffer both ways, checkpoints, spans, inflation from a checkpoint,
and zTOCs made from real gzip layers (GNU tar + gzip) that read back byte for byte."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import flatbuffers
import indexed_gzip
import pytest
from flatbuffers.table import Table as RuntimeTable
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain.artifacts import referrers_tag, with_referrer
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor, parse_manifest
from regfs.domain.reference import parse_image_reference
from regfs.domain.soci import (
    SOCI_INDEX_V1,
    soci_index_manifest,
    soci_indexes_among,
    ztocs_by_layer,
)
from regfs.layers.formats.flatbuffer import Columns, Row, Table
from regfs.layers.formats.inflate import inflate_from_checkpoint
from regfs.layers.formats.ztoc import (
    FILE_COLUMNS,
    WINDOW_SIZE,
    Checkpoint,
    Span,
    Ztoc,
    ZtocFile,
    encode_checkpoints,
    members,
    parse_checkpoints,
    parse_ztoc,
    spans,
    ztoc_sizes,
)
from regfs.layers.formats.ztoc_encode import encode_ztoc
from regfs.layers.ztoc_builder import build_ztoc
from tests.support.crafted import member, multi_member_gzip, tar_of

FILE = ZtocFile(
    name=b"./usr/bin/tool", type="reg", offset=1536, size=10, linkname=b"", mode=0o100755,
    uid=1000, gid=2000, uname=b"me", gname=b"us", mod_time="2023-05-01T12:00:00.5Z",
    pax=((b"SCHILY.xattr.user.a", b"\x00\xffbinary"), (b"path", b"./usr/bin/tool")),
)  # fmt: skip


def ztoc_of(files: tuple[ZtocFile, ...] = (FILE,), size: int = 10_000) -> Ztoc:
    checkpoint = Checkpoint(10, 0, 0, bytes(WINDOW_SIZE))
    return Ztoc(compressed_size=500, uncompressed_size=size, files=files,
                span_digests=("sha256:" + "ab" * 32,),
                checkpoints=encode_checkpoints(1 << 22, [checkpoint]))  # fmt: skip


def test_a_ztoc_round_trips() -> None:
    ztoc = ztoc_of()
    assert parse_ztoc(encode_ztoc(ztoc)) == ztoc
    assert ztoc_sizes(encode_ztoc(ztoc)) == (ztoc.compressed_size, ztoc.uncompressed_size)


def test_fields_sit_in_the_slots_of_the_published_schema() -> None:
    """Read with the flatbuffers runtime by the schema's field ids alone (ztoc.fbs):
    Ztoc{version, build_tool_identifier, compressed_archive_size,
    uncompressed_archive_size, toc, compression_info}; TOC{metadata};
    FileMetadata{name, type, uncompressed_offset, uncompressed_size, linkname, mode, uid,
    gid, uname, gname, mod_time, devmajor, devminor, xattrs}."""
    buffer = bytearray(encode_ztoc(ztoc_of()))
    root = RuntimeTable(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))

    def field(table: RuntimeTable, field_id: int) -> int:
        return int(table.Offset(4 + 2 * field_id))

    assert root.String(root.Pos + field(root, 0)) == b"0.9"
    assert root.Get(flatbuffers.number_types.Int64Flags, root.Pos + field(root, 2)) == 500
    toc = RuntimeTable(buffer, root.Indirect(root.Pos + field(root, 4)))
    metadata = toc.Vector(field(toc, 0))
    entry = RuntimeTable(buffer, toc.Indirect(metadata))
    assert entry.String(entry.Pos + field(entry, 0)) == b"./usr/bin/tool"
    assert entry.String(entry.Pos + field(entry, 1)) == b"reg"
    assert entry.Get(flatbuffers.number_types.Int64Flags, entry.Pos + field(entry, 2)) == 1536
    assert entry.Get(flatbuffers.number_types.Uint32Flags, entry.Pos + field(entry, 7)) == 2000
    info = RuntimeTable(buffer, root.Indirect(root.Pos + field(root, 5)))
    assert field(info, 0) == 0  # gzip is the default: left out, as soci writes it


def test_members_come_out_as_tar_members() -> None:
    (member,) = members(ztoc_of())
    assert member.path == b"./usr/bin/tool" and member.type == ord("0")
    assert member.mode == 0o755 and (member.uid, member.gid) == (1000, 2000)
    assert member.mtime_ns == 1_682_942_400_500_000_000
    assert member.xattrs == ((b"user.a", b"\x00\xffbinary"),)
    assert member.data_offset == 1536 and member.size == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2023-05-01T12:00:00Z", 1_682_942_400 * 10**9),
     ("2023-05-01T14:00:00+02:00", 1_682_942_400 * 10**9),
     ("2023-05-01T12:00:00.123456789Z", 1_682_942_400 * 10**9 + 123_456_789),
     ("1969-12-31T23:59:59Z", -(10**9))],
)  # fmt: skip
def test_go_times_of_any_zone_are_read(text: str, expected: int) -> None:
    file = ZtocFile(name=b"f", type="reg", offset=0, size=0, mod_time=text)
    assert members(ztoc_of((file,)))[0].mtime_ns == expected


@pytest.mark.parametrize(
    "file",
    [ZtocFile(name=b"f", type="weird", offset=0, size=0),
     ZtocFile(name=b"f", type="reg", offset=9_990, size=11),
     ZtocFile(name=b"f", type="reg", offset=-1, size=0),
     ZtocFile(name=b"f", type="reg", offset=0, size=0, mod_time="yesterday")],
)  # fmt: skip
def test_files_a_layer_cannot_have_are_malformed(file: ZtocFile) -> None:
    with pytest.raises(MalformedContent):
        members(ztoc_of((file,)))


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_are_malformed(data: bytes) -> None:
    try:
        ztoc = parse_ztoc(data)
        spans(ztoc)
        members(ztoc)
    except MalformedContent:
        pass
    with contextlib.suppress(MalformedContent):
        ztoc_sizes(data)


@given(st.data())
def test_a_damaged_ztoc_parses_or_is_malformed(data: st.DataObject) -> None:
    encoded = bytearray(encode_ztoc(ztoc_of()))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    with contextlib.suppress(MalformedContent):
        parse_ztoc(bytes(encoded[:cut]))


def _rows_or_malformed(data: bytes, by_field: bool) -> list[Row] | str:
    """The zTOC's file rows as ``parse_ztoc`` reads them (or read field by field), or
    "malformed"."""
    try:
        toc = Table.root(data, budget=1 << 20).table(4)
        if toc is None:
            return "malformed"
        if by_field:
            return [Row([file.blob(field) for field in FILE_COLUMNS.blobs],
                        [file.scalar(field, layout) for field, layout in FILE_COLUMNS.scalars],
                        [tuple(file.tables(field)) for field in FILE_COLUMNS.tables])
                    for file in toc.tables(0)]  # fmt: skip
        return list(toc.rows(0, FILE_COLUMNS))
    except MalformedContent:
        return "malformed"


def _plain(rows: list[Row] | str) -> object:
    if isinstance(rows, str):
        return rows
    return [(row.blobs, row.scalars,
             [[(pair.blob(0), pair.blob(1)) for pair in pairs] for pairs in row.tables])
            for row in rows]  # fmt: skip


_ROWS_ZTOC = encode_ztoc(ztoc_of(
    (FILE, FILE._replace(name=b"etc", type="dir", pax=()), FILE._replace(pax=()))
))  # fmt: skip


def test_rows_read_at_once_are_the_fields_read_one_by_one_at_every_cut() -> None:
    """A zTOC cut anywhere: both ways give the same fields, or both refuse it."""
    for cut in range(len(_ROWS_ZTOC) + 1):
        damaged = _ROWS_ZTOC[:cut]
        at_once, by_field = _rows_or_malformed(damaged, False), _rows_or_malformed(damaged, True)
        assert _plain(at_once) == _plain(by_field), cut


@given(st.data())
def test_rows_read_at_once_are_the_fields_read_one_by_one(data: st.DataObject) -> None:
    """On a damaged zTOC too: both give the same fields, or both refuse it."""
    encoded = bytearray(_ROWS_ZTOC)
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(encoded)
    assert _plain(_rows_or_malformed(damaged, False)) == _plain(_rows_or_malformed(damaged, True))


def test_a_vector_claiming_more_than_the_buffer_is_malformed() -> None:
    encoded = bytearray(encode_ztoc(ztoc_of()))
    toc = Table.root(bytes(encoded), budget=1 << 20).table(4)
    assert toc is not None
    files = toc._indirect(0)  # where the vector of files starts: its length
    assert files is not None
    encoded[files : files + 4] = b"\xff\xff\xff\x7f"
    with pytest.raises(MalformedContent, match="outside"):
        parse_ztoc(bytes(encoded))


def _offsets_vector(builder: flatbuffers.Builder, target: int, count: int) -> int:
    """A vector of ``count`` offsets, all to ``target``."""
    builder.StartVector(4, count, 4)
    for _ in range(count):
        builder.PrependUOffsetTRelative(target)
    return int(builder.EndVector())


def _ztoc_of_one_file_many_times(builder: flatbuffers.Builder, entry: int, count: int) -> bytes:
    """A zTOC whose vector of files holds ``count`` offsets to the file table ``entry``."""
    files = _offsets_vector(builder, entry, count)
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, files, 0)
    toc = builder.EndObject()
    builder.StartObject(4)
    info = builder.EndObject()
    builder.StartObject(6)
    builder.PrependUOffsetTRelativeSlot(4, toc, 0)
    builder.PrependUOffsetTRelativeSlot(5, info, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def test_offsets_pointing_at_one_string_again_and_again_are_refused() -> None:
    """A small zTOC whose 2 000 files share one 100 KiB name would copy out 200 MB."""
    builder = flatbuffers.Builder(1 << 20)
    name = builder.CreateString(b"n" * 100_000)
    builder.StartObject(14)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    data = _ztoc_of_one_file_many_times(builder, builder.EndObject(), 2000)
    assert len(data) < 200_000
    with pytest.raises(MalformedContent, match="same bytes too often"):
        parse_ztoc(data)


T = TypeVar("T")


def _with_peak_memory(work: Callable[[], T]) -> tuple[T, int]:
    """What ``work`` returns, and the most memory it held at once (tracemalloc)."""
    tracemalloc.start()
    try:
        return work(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tables_each_with_a_huge_vtable_of_its_own_hold_no_memory() -> None:
    """60 tables of a 66 KB buffer, each with a vtable of its own of 32 765 slots (the
    vtables overlap): each table's slots are let go once it is read, not kept for the
    buffer's other tables (kept, they took 1.3 MB a table)."""
    tables, vtable_size = 60, 0xFFFE
    vector, first_table = 64, 64 + 4 + 4 * tables
    first_vtable = first_table + 4 * tables
    data = bytearray(first_vtable + 2 * tables + vtable_size)
    struct.pack_into("<I", data, 0, 16)  # the root table, at 16
    struct.pack_into("<HHH", data, 8, 6, 0, 4)  # its vtable: field 0 four bytes in
    struct.pack_into("<iI", data, 16, 16 - 8, vector - 20)
    struct.pack_into("<I", data, vector, tables)
    for number in range(tables):
        element, table = vector + 4 + 4 * number, first_table + 4 * number
        struct.pack_into("<I", data, element, table - element)
        struct.pack_into("<i", data, table, table - (first_vtable + 2 * number))
    struct.pack_into(f"<{(len(data) - first_vtable) // 2}H", data, first_vtable,
                     *[vtable_size] * ((len(data) - first_vtable) // 2))  # fmt: skip
    read, peak = _with_peak_memory(
        lambda: sum(1 for _ in Table.root(bytes(data), budget=1 << 20).tables(0))
    )
    assert read == tables
    assert peak < 16 << 20, peak


def _file_with_pairs(pairs: int, pair_vtable_slots: int) -> bytes:
    """A root whose field 0 is a vector of one table, whose field 0 is a vector of
    ``pairs`` tables sharing one vtable of ``pair_vtable_slots`` slots (all absent)."""
    pairs_vector = 48
    first_pair = pairs_vector + 4 + 4 * pairs
    vtable = first_pair + 4 * pairs
    data = bytearray(vtable + 4 + 2 * pair_vtable_slots)
    struct.pack_into("<I", data, 0, 16)  # the root table, at 16
    struct.pack_into("<HHH", data, 8, 6, 0, 4)  # root's and the file's vtable: field 0 at 4
    struct.pack_into("<iI", data, 16, 16 - 8, 24 - 20)  # root: its vector of files at 24
    struct.pack_into("<II", data, 24, 1, 40 - 28)  # one file, at 40
    struct.pack_into("<HHH", data, 32, 6, 0, 4)
    struct.pack_into("<iI", data, 40, 40 - 32, pairs_vector - 44)
    struct.pack_into("<I", data, pairs_vector, pairs)
    for number in range(pairs):
        element, pair = pairs_vector + 4 + 4 * number, first_pair + 4 * number
        struct.pack_into("<I", data, element, pair - element)
        struct.pack_into("<i", data, pair, pair - vtable)
    struct.pack_into("<HH", data, vtable, 4 + 2 * pair_vtable_slots, 0)
    return bytes(data)


def test_tables_pointing_at_one_huge_vtable_are_read_for_their_fields_alone() -> None:
    """400 tables share a vtable claiming 32 765 slots, and one row holds them all (a
    file's PAX pairs): each table reads the slots of the fields there are, not 256 KiB of
    them (100 MB in all)."""
    data = _file_with_pairs(400, 32_765)
    (row,), peak = _with_peak_memory(
        lambda: list(Table.root(data, budget=1 << 20).rows(0, Columns((), (), (0,))))
    )
    assert len(row.tables[0]) == 400 and row.tables[0][0].blob(40_000) == b""
    assert peak < 4 << 20, peak


def test_one_vector_read_again_and_again_is_charged_each_time() -> None:
    """2 000 files pointing at one vector of 2 000 empty tables would make four million
    tables of a 16 KB buffer; each vector element read costs its four bytes."""
    builder = flatbuffers.Builder(1 << 16)
    builder.StartObject(0)
    pairs = _offsets_vector(builder, builder.EndObject(), 2000)
    builder.StartObject(14)
    builder.PrependUOffsetTRelativeSlot(13, pairs, 0)
    data = _ztoc_of_one_file_many_times(builder, builder.EndObject(), 2000)
    assert len(data) < 20_000
    with pytest.raises(MalformedContent, match="same bytes too often"):
        parse_ztoc(data)


def test_checkpoints_of_both_layouts() -> None:
    points = [Checkpoint(10, 0, 0, bytes(WINDOW_SIZE)),
              Checkpoint(5000, 70_000, 3, os.urandom(WINDOW_SIZE))]  # fmt: skip
    blob = encode_checkpoints(1 << 20, points)
    assert parse_checkpoints(blob) == points
    legacy = blob[:12] + blob[12 + 17 + WINDOW_SIZE :]  # checkpoint 0 implied
    assert parse_checkpoints(legacy) == points
    with pytest.raises(MalformedContent):
        parse_checkpoints(blob[:-1])


def test_spans_must_tile_the_layer() -> None:
    ztoc = ztoc_of()
    (span,) = spans(ztoc)
    assert (span.compressed_start, span.compressed_end, span.size) == (10, 500, 10_000)
    window = bytes(WINDOW_SIZE)
    backwards = encode_checkpoints(1 << 20, [Checkpoint(10, 0, 0, window),
                                             Checkpoint(5, 100, 0, window)])  # fmt: skip
    for bad in (
        Ztoc(500, 10_000, (), ("sha256:" + "ab" * 32,) * 2, backwards),
        Ztoc(500, 10_000, (), ("sha256:" + "ab" * 32, "md5:x"), backwards),
        Ztoc(500, 10_000, (), (), ztoc.checkpoints),
        Ztoc(500, 10_000, (), ztoc.span_digests, ztoc.checkpoints, algorithm=2),
    ):
        with pytest.raises(MalformedContent):
            spans(bad)


def test_inflation_restarts_mid_byte_and_across_stored_blocks_and_members() -> None:
    """Checkpoints from indexed_gzip (through the builder) of a layer holding random data
    (stored blocks, which restart on the original byte boundaries) and text, in two gzip
    members."""
    text = b"".join(b"line %d\n" % n for n in range(400_000))
    data = text[:1_500_000] + os.urandom(600_000) + text[1_500_000:]
    blob = gzip.compress(data[:2_000_000], 6) + gzip.compress(data[2_000_000:], 6)
    whole = inflate_from_checkpoint(blob[10:], 0, bytes(WINDOW_SIZE), len(data) + 10)
    assert whole == data
    with pytest.raises(MalformedContent):
        inflate_from_checkpoint(b"\xff" * 100, 0, bytes(WINDOW_SIZE), 10)


def test_a_ztoc_made_from_a_real_layer_reads_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/random.bin").write_bytes(os.urandom(3 << 20))
    (root / "dir/sub/text.txt").write_bytes(b"".join(b"%d\n" % n for n in range(900_000)))
    (root / "link").symlink_to("dir/sub/text.txt")
    os.link(root / "dir/random.bin", root / "hard")
    subprocess.run(["tar", "-C", str(root), "-czf", str(tmp_path / "layer.tgz"), "."],
                   check=True)  # fmt: skip
    blob = (tmp_path / "layer.tgz").read_bytes()
    tar = zlib.decompress(blob, 31)
    ztoc = parse_ztoc(build_ztoc(tmp_path / "layer.tgz", span_size=1 << 20))
    assert len(reads_back(ztoc, blob, tar)) > 3
    with tarfile.open(tmp_path / "layer.tgz") as archive:
        expected = {m.name: (m.type, m.offset_data, m.size if m.isreg() else 0) for m in archive}
    listed = {m.path.decode().rstrip("/") or ".": (bytes([m.type]), m.data_offset, m.size)
              for m in members(ztoc)}  # fmt: skip
    assert listed == expected


def test_spans_reach_the_end_of_a_layer_read_in_one_buffer(tmp_path: Path) -> None:
    """indexed_gzip builds its index only as far as reads needed it, and serves them from
    a buffer of a few MiB: a 3 MiB layer got no seek point at all (one span, so a file at
    its end cost the whole layer), a bigger one none in its last few MiB."""
    tar = tar_of([member("random.bin", os.urandom(3 << 20)), member("last", b"last\n")],
                 tarfile.PAX_FORMAT)  # fmt: skip
    blob = gzip.compress(tar, mtime=0)
    (tmp_path / "layer").write_bytes(blob)
    ztoc = parse_ztoc(build_ztoc(tmp_path / "layer", span_size=1 << 20))
    layer_spans = reads_back(ztoc, blob, tar)
    assert len(layer_spans) >= 3
    assert max(span.compressed_end - span.compressed_start for span in layer_spans) < 2 << 20


def reads_back(ztoc: Ztoc, blob: bytes, tar: bytes) -> list[Span]:
    """The zTOC's spans, each checked to hash to its digest and inflate to the tar's bytes."""
    layer_spans = spans(ztoc)
    assert ztoc.compressed_size == len(blob) and ztoc.uncompressed_size == len(tar)
    for span in layer_spans:
        compressed = blob[span.compressed_start : span.compressed_end]
        assert hashlib.sha256(compressed).digest() == span.sha256
        made = inflate_from_checkpoint(compressed, span.bits, span.window, span.size)
        assert made == tar[span.uncompressed : span.uncompressed + span.size]
    return layer_spans


TEXT_TAR = tar_of([member("text", b"".join(b"line %d\n" % n for n in range(160_000)))],
                  tarfile.PAX_FORMAT)  # fmt: skip
"""More than the 1 MiB the builder reads at a time: indexed_gzip builds its index while
serving the second read, up to the end of the stream."""


@pytest.mark.parametrize(
    "blob",
    [gzip.compress(TEXT_TAR, mtime=0),
     gzip.compress(TEXT_TAR[:600_000], mtime=0) + gzip.compress(b"", mtime=0)
     + gzip.compress(TEXT_TAR[600_000:], mtime=0),
     gzip.compress(TEXT_TAR, mtime=0) + gzip.compress(b"", mtime=0),
     gzip.compress(TEXT_TAR, mtime=0) + bytes(100),
     multi_member_gzip(TEXT_TAR, 300_000)],
    ids=["one member", "an empty member inside", "an empty member last", "zero padding",
         "members of 300 kB, each with an empty one"],
)  # fmt: skip
def test_no_span_starts_where_the_layer_ends_or_where_the_one_before_starts(
    tmp_path: Path, blob: bytes
) -> None:
    """indexed_gzip records a seek point at the end of the stream once its index reaches it
    (the mount tests' minbase Debian layer gets one) and one after each member's gzip header, at the
    offset of the point before when a member is empty: neither may begin a span, which
    would be empty and refused by every reader."""
    with indexed_gzip.IndexedGzipFile(fileobj=io.BytesIO(blob), spacing=64 << 10) as indexed:
        while indexed.read(1 << 20):
            pass
        seek_points = list(indexed.seek_points())
    assert seek_points[-1][0] == len(TEXT_TAR)  # a point at the end of the stream
    (tmp_path / "layer").write_bytes(blob)
    ztoc = parse_ztoc(build_ztoc(tmp_path / "layer", span_size=64 << 10))
    assert len(reads_back(ztoc, blob, TEXT_TAR)) > 10


def test_soci_index_manifests_and_referrers() -> None:
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(b"layer"), 5)
    ztoc = Descriptor("application/octet-stream", Digest.of(b"ztoc"), 4)
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of(b"img"), 3)
    raw = soci_index_manifest([(ztoc, layer)], subject, 1 << 22, "test")
    index = parse_manifest(raw)
    assert ztocs_by_layer(index, "index") == {layer.digest: index.layers[0]}  # type: ignore[arg-type]
    assert json.loads(raw)["subject"]["digest"] == str(subject.digest)
    referrer = Descriptor(subject.media_type, Digest.of(raw), len(raw),
                          artifact_type=SOCI_INDEX_V1)  # fmt: skip
    listing = with_referrer(None, None, referrer, {})
    parsed = parse_manifest(listing)
    assert soci_indexes_among(parsed) == [Digest.of(raw)]  # type: ignore[arg-type]
    again = with_referrer(parsed, listing, referrer, {})  # type: ignore[arg-type]
    assert again == listing  # added once
    assert referrers_tag(subject.digest) == f"sha256-{subject.digest.hex}"
    with pytest.raises(MalformedContent):
        ztocs_by_layer(parse_manifest(raw.replace(SOCI_INDEX_V1.encode(), b"x/y")), "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000", "a/b", "1")),
     ("host.io/a", ("host.io", "a", "latest")),
     ("host.io/a@sha256:" + "0" * 64, ("host.io", "a", "sha256:" + "0" * 64))],
)  # fmt: skip
def test_image_references(text: str, expected: tuple[str, str, str]) -> None:
    assert parse_image_reference(text) == expected


@pytest.mark.parametrize("text", ["host.io/a:b/c", "noslash", "host.io/A:1", "host.io/a@md5:x"])
def test_bad_image_references(text: str) -> None:
    with pytest.raises(ValueError):
        parse_image_reference(text)


def test_a_small_layer_with_a_named_gzip_header_gets_its_first_checkpoint(tmp_path: Path) -> None:
    """indexed_gzip records no seek point in a small blob: the first checkpoint is made
    right after the gzip header, whatever it holds (here a file name)."""
    tar = tar_of([member("hello", b"hello\n")], tarfile.PAX_FORMAT)
    with gzip.GzipFile("layer.tar", "wb", fileobj=(buffer := io.BytesIO()), mtime=0) as file:
        file.write(tar)
    (tmp_path / "blob").write_bytes(buffer.getvalue())
    ztoc = parse_ztoc(build_ztoc(tmp_path / "blob"))
    (span,) = spans(ztoc)
    assert span.compressed_start == 10 + len(b"layer.tar\0")
    compressed = buffer.getvalue()[span.compressed_start : span.compressed_end]
    assert inflate_from_checkpoint(compressed, 0, span.window, span.size) == tar[: span.size]
    assert [m.path for m in members(ztoc)] == [b"hello"]
