"""zstd frame boundaries from headers, and random access that restarts at a frame."""

from __future__ import annotations

import io
import itertools
import os
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import trio
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.domain.errors import MalformedContent
from regfs.layers.formats.compression import (
    ZSTD_SPACING,
    ZstdIndexer,
    read_exactly,
    zstd_bytes_at,
)
from regfs.layers.formats.entries import ROOT_ID
from regfs.layers.formats.zstd_frames import FrameSpan, frame_spans
from regfs.layers.index.build import build_index
from regfs.layers.index.layer_index import LayerIndex
from tests.support.crafted import member, tar_of


def skippable(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5E, len(payload)) + payload


def frames_of(pieces: list[bytes], **options: object) -> bytes:
    compressor = zstandard.ZstdCompressor(**options)  # type: ignore[arg-type]
    return b"".join(compressor.compress(piece) for piece in pieces)


def test_frames_and_skippable_frames_are_found_by_their_headers() -> None:
    first = zstandard.ZstdCompressor(write_checksum=True).compress(os.urandom(300_000))
    second = zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 500_000)
    stream = first + skippable(b"metadata") + second
    assert list(frame_spans(io.BytesIO(stream))) == [
        FrameSpan(0, len(first), skippable=False),
        FrameSpan(len(first), len(first) + 16, skippable=True),
        FrameSpan(len(first) + 16, len(stream), skippable=False),
    ]


def test_a_streamed_frame_of_unknown_size_is_found_too() -> None:
    buffer = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buffer, closefd=False) as writer:
        for _ in range(20):
            writer.write(os.urandom(50_000))
    stream = buffer.getvalue() + frames_of([b"tail"])
    spans = list(frame_spans(io.BytesIO(stream)))
    assert [span.end for span in spans] == [len(buffer.getvalue()), len(stream)]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"PK\x03\x04 not zstd", "no frame at byte 0"),
        (frames_of([b"x" * 1000])[:-2], "cut short"),
        (frames_of([b"x"]) + b"\x28\xb5\x2f", "cut short"),
        (skippable(b"abc")[:-1], "cut short"),
        (b"\x28\xb5\x2f\xfd\x08" + b"\x00" * 8, "reserved header bit"),
        (b"\x28\xb5\x2f\xfd\x20\x00" + bytes([0b111, 0, 0]), "reserved block type"),
        (b"\x28\xb5\x2f\xfd\x20\x00" + (((200 << 10) << 3) | 5).to_bytes(3, "little"), "block"),
    ],
)
def test_what_is_not_a_whole_frame_is_malformed(stream: bytes, message: str) -> None:
    with pytest.raises(MalformedContent, match=message):
        list(frame_spans(io.BytesIO(stream)))


@given(st.binary(max_size=300))
def test_any_bytes_give_spans_or_malformed_content(stream: bytes) -> None:
    try:
        spans = list(frame_spans(io.BytesIO(stream)))
    except MalformedContent:
        return
    assert all(0 <= span.start < span.end <= len(stream) for span in spans)


@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=8), st.data())
def test_spans_of_real_frames_tile_the_stream_and_cuts_are_caught(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = frames_of(pieces)
    spans = list(frame_spans(io.BytesIO(stream)))
    assert [span.start for span in spans][1:] == [span.end for span in spans][:-1]
    assert spans[-1].end == len(stream)
    cut = data.draw(st.integers(1, len(stream) - 1))
    if cut not in {span.end for span in spans}:
        with pytest.raises(MalformedContent):
            list(frame_spans(io.BytesIO(stream[:cut])))


def test_the_indexer_reads_frame_after_frame_and_keeps_spaced_starts() -> None:
    pieces = [os.urandom(300_000) for _ in range(20)]
    stream = frames_of(pieces[:10]) + skippable(b"x" * 100) + frames_of(pieces[10:])
    indexer = ZstdIndexer(io.BytesIO(stream))
    assert read_exactly(indexer, 7_000_000) == b"".join(pieces)
    checkpoints = indexer.checkpoints()
    assert checkpoints[0] == (0, 0) and len(checkpoints) == 5
    assert all(b[0] - a[0] >= ZSTD_SPACING for a, b in itertools.pairwise(checkpoints))
    for uncompressed, compressed in checkpoints:
        frame = zstandard.ZstdDecompressor().decompressobj().decompress(stream[compressed:])
        assert frame == pieces[uncompressed // 300_000]


def test_a_frame_that_does_not_decompress_is_an_error() -> None:
    good = frames_of([b"a" * 1000])
    bad = bytearray(frames_of([os.urandom(1000)], write_checksum=True))
    bad[-1] ^= 0xFF  # the content checksum
    with pytest.raises(zstandard.ZstdError):
        read_exactly(ZstdIndexer(io.BytesIO(good + bytes(bad))), 5000)


def zstd_layer(tmp_path: Path) -> tuple[bytes, bytes]:
    """A tar of 3 MiB files compressed by pzstd (a frame per piece), and the tar."""
    tar = tar_of([member(f"f{n}", os.urandom(3 << 20)) for n in range(6)], tarfile.PAX_FORMAT)
    (tmp_path / "layer.tar").write_bytes(tar)
    subprocess.run(
        ["pzstd", "-q", "-p", "2", "-1", str(tmp_path / "layer.tar"), "-o",
         str(tmp_path / "blob")],
        check=True,
    )  # fmt: skip
    return (tmp_path / "blob").read_bytes(), tar


def test_a_re_read_of_a_multi_frame_layer_starts_at_the_frame_before_it(
    tmp_path: Path,
) -> None:
    blob, tar = zstd_layer(tmp_path)
    assert len(list(frame_spans(io.BytesIO(blob)))) > 4  # pzstd: one frame per piece
    chunks = ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)
    build_index(tmp_path / "blob", tmp_path / "index", "sha256:x", chunks)
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None and index.meta.compression == "zstd"
    assert [e.name for e in trio.run(index.children, ROOT_ID)] == [
        f"f{n}".encode() for n in range(6)
    ]
    chunk = 1 << 20
    for offset in (0, 5 * chunk + 7, len(tar) - 3 * chunk):
        start, compressed = index.checkpoint_before(offset)
        stop = index.chunk_compressed_end((offset + chunk - 1) // chunk)
        assert stop - compressed <= 4 * chunk, (offset, stop - compressed)
        data = zstd_bytes_at(blob[compressed:stop], offset - start, chunk)
        assert data == tar[offset : offset + chunk]
    index.close()
