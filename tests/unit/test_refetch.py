"""A chunk evicted from the cache is made again from one Range request and one
decompression: gzip from a checkpoint with its window, zstd from a frame start up to where
the chunk's output ends, a plain tar as its bytes; each checked by the verifying getter."""

from __future__ import annotations

import gzip
import itertools
import os
import tarfile
from pathlib import Path

import cachetools
import pytest
import trio
import zstandard

from regfs.cache.chunks import ChunkCache
from regfs.cache.flight import SingleFlight
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor
from regfs.layers import chunk_reader
from regfs.layers.formats.compression import GZIP_SPACING
from regfs.layers.index.build import CHUNK_SIZE, build_index
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.reader_base import RangeFetch, ReadContext
from regfs.layers.readers import read_stream, reader_for
from regfs.layers.streams import Streams
from tests.support.crafted import member, multi_member_gzip, tar_of, zeros_layer

MiB = 1 << 20


def tar_layer(files: int, size: int) -> bytes:
    """A tar of ``files`` half-compressible files of ``size`` bytes."""
    return tar_of(
        [member(f"f{n:04}", (os.urandom(size // 4) * 2 + bytes(size // 2))[:size])
         for n in range(files)],
        tarfile.PAX_FORMAT,
    )  # fmt: skip


class Registry:
    """The blob, served by Range; every request recorded."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.requests: list[tuple[int, int]] = []

    def ranges(self, layer: LayerRef) -> RangeFetch:
        async def fetch(start: int, end: int, what: str) -> bytes:
            self.requests.append((start, end))
            return self.blob[start:end]

        return fetch


def indexed(tmp_path: Path, blob: bytes) -> tuple[LayerIndex, LayerRef]:
    """The blob's index, built as a first pass does (its chunks go to a cache of their
    own: the reader below starts with none)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "blob").write_bytes(blob)
    first = ChunkCache(CacheLayout(tmp_path / "first"), 1 << 40)
    build_index(tmp_path / "blob", tmp_path / "index", "sha256:x", first)
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest.of(blob), len(blob))
    return index, LayerRef("registry.test", "app", descriptor)


def read(tmp_path: Path, blob: bytes, offset: int, size: int) -> tuple[bytes, Registry]:
    index, layer = indexed(tmp_path, blob)
    registry = Registry(blob)
    context = ReadContext(
        VerifiedPieces(ChunkCache(CacheLayout(tmp_path / "reader"), 1 << 40)), registry.ranges,
        trio.CapacityLimiter(2), cachetools.LRUCache(1 << 20), SingleFlight(), Streams(),
    )  # fmt: skip
    reader = reader_for(layer, index, context)
    data = trio.run(read_stream, reader, index.meta.uncompressed_size, offset, size)
    return data, registry


@pytest.mark.parametrize("offset", [0, 3 * MiB + 17, 9 * MiB - 2000])
def test_a_gzip_chunk_is_one_range_request_from_its_checkpoint(tmp_path: Path, offset: int) -> None:
    tar = tar_layer(12, 800_000)
    blob = gzip.compress(tar, compresslevel=1)
    data, registry = read(tmp_path, blob, offset, 1000)
    assert data == tar[offset : offset + 1000]
    ((start, end),) = registry.requests
    assert end - start < 2 * (GZIP_SPACING + CHUNK_SIZE)  # not the blob: near a checkpoint


def test_gzip_checkpoints_are_spaced_and_each_restarts_inflation(tmp_path: Path) -> None:
    tar = tar_layer(12, 800_000)
    blob = gzip.compress(tar, compresslevel=6)
    index, _ = indexed(tmp_path, blob)
    points = [index.checkpoint_before(offset) for offset in range(0, len(tar), 256 << 10)]
    starts = sorted(set(points))
    assert len(starts) >= 3 and starts[0] == (0, 10)  # right after the 10-byte gzip header
    assert all(b[0] - a[0] >= GZIP_SPACING for a, b in itertools.pairwise(starts))
    for start, compressed in starts:
        bits, window = index.span_start(start)
        made = trio.run(trio.to_thread.run_sync, _inflate, blob[compressed:], bits, window, 4096)
        assert made == tar[start : start + 4096]


@pytest.mark.parametrize("size", [6 * MiB, 12 * MiB])
def test_gzip_checkpoints_reach_the_end_of_the_layer(tmp_path: Path, size: int) -> None:
    """indexed_gzip builds its index only as far as reads needed it (they are served from
    a buffer of a few MiB): a 6 MiB layer had no checkpoint but its first, a 12 MiB one
    none in its last 4 MiB, so a chunk there was fetched from far before it."""
    tar = tar_of([member("random", os.urandom(size)), member("last", b"last\n")],
                 tarfile.PAX_FORMAT)  # fmt: skip
    index, _ = indexed(tmp_path, gzip.compress(tar, compresslevel=6))
    start, _ = index.checkpoint_before(len(tar) - 1)
    assert len(tar) - start <= GZIP_SPACING + (64 << 10)


def _inflate(compressed: bytes, bits: int, window: bytes, size: int) -> bytes:
    from regfs.layers.formats.inflate import inflate_from_checkpoint

    return inflate_from_checkpoint(compressed, bits, window, size)


def test_a_multi_member_gzip_layer_reads_at_random(tmp_path: Path) -> None:
    """eStargz and ``pigz --independent`` write many members, empty ones among them."""
    tar = tar_of([member(f"f{n}", os.urandom(3000)) for n in range(2000)], tarfile.PAX_FORMAT)
    blob = multi_member_gzip(tar, 4096)
    for offset in (0, 4095, 4096, 1_000_003, len(tar) - 700):
        data, _ = read(tmp_path / str(offset), blob, offset, 5000)
        assert data == tar[offset : offset + 5000], offset


def test_a_single_frame_zstd_chunk_is_fetched_up_to_where_it_ends(tmp_path: Path) -> None:
    """One frame (as skopeo and buildkit write it): the re-fetch starts at its first byte
    but stops where the chunk's output is complete, not at the end of the blob."""
    tar = tar_layer(12, 800_000)
    blob = zstandard.ZstdCompressor(level=1).compress(tar)
    offset = 2 * MiB + 5
    data, registry = read(tmp_path, blob, offset, 1000)
    assert data == tar[offset : offset + 1000]
    ((start, end),) = registry.requests
    assert start == 0 and end < len(blob) * 0.75


def test_a_long_zstd_re_fetch_is_spooled_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``ZSTD_HELD_BYTES`` of compressed bytes, the re-fetch goes piece by piece to a
    file (a chunk deep in a big single-frame layer would otherwise sit whole in memory)."""
    monkeypatch.setattr(chunk_reader, "ZSTD_HELD_BYTES", 1 << 20)
    tar = tar_layer(12, 800_000)
    blob = zstandard.ZstdCompressor(level=1).compress(tar)
    offset = 6 * MiB + 5
    data, registry = read(tmp_path, blob, offset, 1000)
    assert data == tar[offset : offset + 1000]
    assert len(registry.requests) > 2
    assert all(end - start <= 1 << 20 for start, end in registry.requests)


def test_a_many_frame_zstd_chunk_starts_at_a_frame(tmp_path: Path) -> None:
    tar = tar_layer(12, 800_000)
    compressor = zstandard.ZstdCompressor(level=1)
    blob = b"".join(compressor.compress(tar[i : i + MiB]) for i in range(0, len(tar), MiB))
    offset = 7 * MiB + 3
    data, registry = read(tmp_path, blob, offset, 1000)
    assert data == tar[offset : offset + 1000]
    ((start, _),) = registry.requests
    assert start > len(blob) / 2


def test_a_plain_tar_chunk_is_its_bytes(tmp_path: Path) -> None:
    tar = tar_layer(4, 700_000)
    data, registry = read(tmp_path, tar, 1_500_000, 1000)
    assert data == tar[1_500_000:1_501_000]
    assert registry.requests == [(CHUNK_SIZE, 2 * CHUNK_SIZE)]


def test_bytes_that_do_not_decompress_are_fetched_once_more_then_refused(tmp_path: Path) -> None:
    tar = tar_layer(4, 700_000)
    blob = zstandard.ZstdCompressor(level=1).compress(tar)
    index, layer = indexed(tmp_path, blob)
    registry = Registry(bytes(len(blob)))  # zeros where the blob was
    context = ReadContext(
        VerifiedPieces(ChunkCache(CacheLayout(tmp_path / "reader"), 1 << 40)), registry.ranges,
        trio.CapacityLimiter(2), cachetools.LRUCache(1 << 20), SingleFlight(), Streams(),
    )  # fmt: skip
    reader = reader_for(layer, index, context)
    with pytest.raises(MalformedContent, match="cannot decompress"):
        trio.run(read_stream, reader, index.meta.uncompressed_size, 0, 10)
    assert len(registry.requests) == 2


def test_a_chunk_damaged_on_the_way_is_fetched_once_more(tmp_path: Path) -> None:
    """The first answer has a byte flipped inside the chunk's own deflate data: its hash
    fails, and the second answer, intact, is the chunk."""
    tar = tar_layer(4, 700_000)
    blob = gzip.compress(tar, compresslevel=1)
    index, layer = indexed(tmp_path, blob)
    registry = Registry(blob)
    honest = registry.ranges(layer)

    def damaging(layer: LayerRef) -> RangeFetch:
        async def fetch(start: int, end: int, what: str) -> bytes:
            data = bytearray(await honest(start, end, what))
            if len(registry.requests) == 1:
                data[1000] ^= 0xFF  # in the deflate data of the chunk asked for
            return bytes(data)

        return fetch

    context = ReadContext(
        VerifiedPieces(ChunkCache(CacheLayout(tmp_path / "reader"), 1 << 40)), damaging,
        trio.CapacityLimiter(2), cachetools.LRUCache(1 << 20), SingleFlight(), Streams(),
    )  # fmt: skip
    reader = reader_for(layer, index, context)
    offset = 500_000  # the first chunk: its checkpoint is the stream's start
    assert trio.run(read_stream, reader, len(tar), offset, 100) == tar[offset : offset + 100]
    assert len(registry.requests) == 2


def test_the_index_of_a_decompression_bomb_stays_small(tmp_path: Path) -> None:
    """Its checkpoints' windows are zeros: stored compressed, they take almost nothing."""
    (tmp_path / "blob").write_bytes(zeros_layer(256 << 20))
    build_index(
        tmp_path / "blob",
        tmp_path / "index",
        "sha256:x",
        ChunkCache(CacheLayout(tmp_path), 1 << 40),
    )
    assert (tmp_path / "index").stat().st_size < 256 << 10
