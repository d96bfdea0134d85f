"""The first pass over a layer follows its download: it reads the blob as it lands, and
no index is written before the blob is complete and verified (``landing_blob.py``)."""

from __future__ import annotations

import gzip
import os
import sqlite3
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from indexed_gzip import ZranError

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.layers.blob_sink import VerifyingSink
from regfs.layers.index.build import build_index
from regfs.layers.landing_blob import BlobAbandoned, LandingBlob
from regfs.layers.layer_ref import LayerRef
from tests.support.crafted import member, tar_of

PIECE = 64 << 10


def layer_tar() -> bytes:
    return tar_of(
        [member(f"dir/f{n:03}", os.urandom(3000) * (n % 7 + 1)) for n in range(200)],
        tarfile.PAX_FORMAT,
    )


COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, 6),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "none": lambda data: data,
}


def rows(index: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(index) as connection:
        tables = ("entries", "chunks", "checkpoints", "span_starts", "meta")
        return [row for table in tables for row in connection.execute(f"SELECT * FROM {table}")]


class Download:
    """A blob written piece by piece from another thread, as a download lands."""

    def __init__(self, path: Path, blob: bytes) -> None:
        self.landing = LandingBlob(path, len(blob))
        self.path = path
        self.blob = blob
        path.write_bytes(b"")

    def land(self, upto: int) -> None:
        with open(self.path, "r+b") as file:
            file.seek(0, os.SEEK_END)
            written = file.tell()
            file.write(self.blob[written:upto])
        self.landing.landed(upto)

    def run(self, finish: Callable[[], None], pause: float = 0.001) -> threading.Thread:
        def land_all() -> None:
            for end in range(PIECE, len(self.blob) + PIECE, PIECE):
                self.land(min(end, len(self.blob)))
                time.sleep(pause)
            finish()

        thread = threading.Thread(target=land_all)
        thread.start()
        return thread


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_an_index_built_as_the_blob_lands_equals_one_built_after(
    tmp_path: Path, compression: str
) -> None:
    blob = COMPRESSIONS[compression](layer_tar())
    (tmp_path / "whole").write_bytes(blob)
    chunks = ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)
    build_index(tmp_path / "whole", tmp_path / "after.index", "sha256:x", chunks)
    download = Download(tmp_path / "landing", blob)
    writer = download.run(download.landing.complete)
    build_index(download.path, tmp_path / "landed.index", "sha256:x", chunks,
                landing=download.landing)  # fmt: skip
    writer.join()
    assert rows(tmp_path / "landed.index") == rows(tmp_path / "after.index")


def test_no_index_is_written_before_the_blob_is_complete(tmp_path: Path) -> None:
    """All bytes landed is not enough: the index waits for ``complete`` (the digest's word)."""
    blob = gzip.compress(layer_tar())
    download = Download(tmp_path / "landing", blob)
    download.land(len(blob))
    chunks = ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)
    index = tmp_path / "index"
    landing = {"landing": download.landing}
    builder = threading.Thread(target=build_index, args=(download.path, index, "sha256:x", chunks),
                               kwargs=landing)  # fmt: skip
    builder.start()
    builder.join(timeout=1.0)
    assert builder.is_alive() and not index.exists()
    download.landing.complete()
    builder.join(timeout=30)
    assert not builder.is_alive() and index.exists()


def test_an_abandoned_download_leaves_no_index(tmp_path: Path) -> None:
    blob = gzip.compress(layer_tar())
    download = Download(tmp_path / "landing", blob[: len(blob) // 2])
    writer = download.run(download.landing.abandon)
    chunks = ChunkCache(CacheLayout(tmp_path / "cache"), 1 << 30)
    # the reader's BlobAbandoned, or as indexed_gzip passes it on (a ZranError) at its start
    with pytest.raises((BlobAbandoned, ZranError)):
        build_index(download.path, tmp_path / "index", "sha256:x", chunks,
                    landing=download.landing)  # fmt: skip
    writer.join()
    assert download.landing.abandoned
    assert not (tmp_path / "index").exists()


def test_a_reader_waits_for_what_has_not_landed_and_sees_the_end_once_complete(
    tmp_path: Path,
) -> None:
    download = Download(tmp_path / "landing", os.urandom(3 * PIECE))
    reader = download.landing.open()
    download.land(PIECE)
    assert reader.read(PIECE) == download.blob[:PIECE]
    got: list[bytes] = []
    waiting = threading.Thread(target=lambda: got.append(reader.read(2 * PIECE)))
    waiting.start()
    waiting.join(timeout=0.2)
    assert waiting.is_alive()  # a read past what landed waits…
    download.land(3 * PIECE)
    waiting.join(timeout=5)
    assert got == [download.blob[PIECE:]]
    ending = threading.Thread(target=lambda: got.append(reader.read(1)))
    ending.start()
    ending.join(timeout=0.2)
    assert ending.is_alive()  # …and so does the end, until the blob is complete
    download.landing.complete()
    ending.join(timeout=5)
    assert got[-1] == b"" and reader.seek(0, os.SEEK_END) == 3 * PIECE
    reader.seek(10)
    assert reader.read(5) == download.blob[10:15]
    reader.close()
    assert download.path.read_bytes() == download.blob


async def test_a_download_that_starts_over_abandons_what_its_reader_saw(tmp_path: Path) -> None:
    """A place's answer begins with ``restart``: before any byte that changes nothing;
    after some (a mirror failed midway), the reader's bytes are gone."""
    blob = os.urandom(3 * PIECE)
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest.of(blob), len(blob))
    landing = LandingBlob(tmp_path / "blob", len(blob))
    with open(tmp_path / "blob", "wb") as file:
        sink = VerifyingSink(file, LayerRef("registry.test", "app", descriptor), None,
                             landing=landing)  # fmt: skip
        await sink.restart()
        assert not landing.abandoned
        await sink.write(blob[:PIECE])
        await sink.restart()
        assert landing.abandoned
        with pytest.raises(BlobAbandoned):
            landing.wait_verified()
