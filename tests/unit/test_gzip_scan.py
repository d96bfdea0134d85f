"""The first pass over a gzip blob through libz: the same bytes as zlib's own inflation,
checkpoints ``spacing`` apart that each restart inflation with the output kept after
them, concatenated members and zero padding read on, and every malformed blob a
``GzipDataError`` (property-tested on damaged blobs)."""

from __future__ import annotations

import gzip
import io
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfs.layers.formats.gzip_points import compressed_start, restartable
from regfs.layers.formats.gzip_scan import GzipDataError, GzipScanner, RecordedHeads
from regfs.layers.formats.inflate import inflate_from_checkpoint

SPACING = 256 << 10
HEAD = 16 << 10


def mixed_data(size: int, seed: int = 0) -> bytes:
    """Text and random runs: deflate blocks of every kind (stored ones for the random)."""
    chance = random.Random(seed)
    parts, length = [], 0
    while length < size:
        if chance.random() < 0.3:
            part = chance.randbytes(20_000)
        else:
            part = b"".join(b"line %d of text\n" % chance.randrange(1000) for _ in range(2000))
        parts.append(part)
        length += len(part)
    return b"".join(parts)[:size]


def scan(blob: bytes, read_size: int = 1 << 20) -> tuple[bytes, GzipScanner]:
    scanner = GzipScanner(io.BytesIO(blob), spacing=SPACING, head=HEAD)
    parts = []
    while piece := scanner.read(read_size):
        parts.append(piece)
    scanner.close()
    return b"".join(parts), scanner


@pytest.mark.parametrize("read_size", [4096, 1 << 20])
def test_the_output_and_checkpoints_of_one_member(read_size: int) -> None:
    data = mixed_data(3 << 20)
    blob = gzip.compress(data, mtime=0)
    output, scanner = scan(blob, read_size)
    assert output == data
    assert len(scanner.points) >= 5
    previous = 0
    for point in scanner.points:
        assert point.uncompressed >= previous + SPACING
        previous = point.uncompressed
        start = compressed_start(point)
        restarted = inflate_from_checkpoint(blob[start:], point.bits, point.window, HEAD)
        assert restarted == data[point.uncompressed : point.uncompressed + HEAD]
        assert scanner.heads[point.uncompressed] == restarted
    assert scanner.heads[0] == data[:HEAD]


def test_restartable_keeps_them_all_from_the_recorded_heads() -> None:
    data = mixed_data(2 << 20, seed=1)
    blob = gzip.compress(data, mtime=0)
    output, scanner = scan(blob)
    kept = restartable(RecordedHeads(scanner.heads), io.BytesIO(blob), scanner.points,
                       len(output), spacing=SPACING)  # fmt: skip
    assert kept[0].uncompressed == 0
    assert kept[1:] == scanner.points


def test_members_empty_members_and_zero_padding_at_the_end_are_read_on() -> None:
    parts = [mixed_data(700_000, seed=n) for n in range(3)]
    blob = (gzip.compress(parts[0], mtime=0) + gzip.compress(b"", mtime=0)
            + gzip.compress(parts[1], mtime=0) + gzip.compress(parts[2], mtime=0)
            + bytes(3000))  # fmt: skip
    output, scanner = scan(blob, 100_000)
    assert output == b"".join(parts)
    for point in scanner.points:  # a read through the index stops at the layer's end
        start, size = compressed_start(point), min(HEAD, len(output) - point.uncompressed)
        restarted = inflate_from_checkpoint(blob[start:], point.bits, point.window, size)
        assert restarted == output[point.uncompressed : point.uncompressed + HEAD]


def test_a_small_blob_has_no_checkpoint_but_its_start() -> None:
    output, scanner = scan(gzip.compress(b"small", mtime=0))
    assert output == b"small"
    assert scanner.points == []
    assert scanner.heads == {0: b"small"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[: len(blob) // 2],  # cut short
        lambda blob: blob[:-4],  # the trailer's length missing
        lambda blob: blob + b"garbage",  # not another member
        lambda blob: blob + bytes(10) + blob,  # zeros between members
        lambda blob: blob + zlib.compress(b"smuggled"),  # a zlib stream, not a member
        lambda blob: blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:],
        lambda blob: b"\x1f\x8b\x08\x00" + blob[4:20],
    ],
)
def test_a_damaged_blob_is_a_gzip_data_error(damage: object) -> None:
    blob = gzip.compress(mixed_data(300_000), mtime=0)
    with pytest.raises(GzipDataError):
        scan(damage(blob))  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=5000),
    level=st.integers(0, 9),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
    cut=st.integers(0, 10_000),
)
def test_any_damage_gives_the_bytes_zlib_gives_or_a_gzip_data_error(
    data: bytes, level: int, position: int, value: int, cut: int
) -> None:
    """Whatever the blob, the pass ends: with what zlib inflates, or a GzipDataError."""
    blob = bytearray(gzip.compress(data * 50, compresslevel=level, mtime=0))
    blob[position % len(blob)] = value
    blob = blob[: max(1, cut % (len(blob) + 1))]
    try:
        output, _ = scan(bytes(blob), 777)
    except GzipDataError:
        return
    inflater = zlib.decompressobj(31)
    assert output == inflater.decompress(bytes(blob))
    assert inflater.eof
