"""Downloads cut off and kept to go on from: which are kept, for how long, and a sink that
goes on from a kept prefix verifying the whole blob."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from regfs.domain.digest import Digest
from regfs.domain.errors import VerificationFailed
from regfs.domain.manifest import Descriptor
from regfs.layers.blob_sink import HashedPrefix, VerifyingSink
from regfs.layers.kept_downloads import KEPT_SECONDS, MAX_KEPT, KeptDownloads
from regfs.layers.layer_ref import LayerRef

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer_of(blob: bytes, repository: str = "app") -> LayerRef:
    return LayerRef("registry.test", repository, Descriptor(GZIP, Digest.of(blob), len(blob)))


def prefix(data: bytes) -> HashedPrefix:
    return HashedPrefix(len(data), hashlib.sha256(data))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_download_is_taken_once() -> None:
    kept = KeptDownloads()
    layer = layer_of(b"blob")
    assert kept.keep(layer, Path("tmp/a"), prefix(b"bl")) == []
    found, expired = kept.take(layer)
    assert found is not None and found.path == Path("tmp/a") and found.prefix.size == 2
    assert expired == []
    assert kept.take(layer) == (None, [])


def test_kept_downloads_expire_when_idle() -> None:
    clock = Clock()
    kept = KeptDownloads(clock)
    old, new = layer_of(b"old"), layer_of(b"new")
    kept.keep(old, Path("tmp/old"), prefix(b"o"))
    clock.now = KEPT_SECONDS + 1
    dropped = kept.keep(new, Path("tmp/new"), prefix(b"n"))
    assert [download.path for download in dropped] == [Path("tmp/old")]
    assert kept.take(old) == (None, [])
    clock.now = 2 * KEPT_SECONDS + 2
    found, expired = kept.take(old)
    assert found is None and [download.path for download in expired] == [Path("tmp/new")]


def test_at_most_max_kept_are_kept_the_oldest_dropped_first() -> None:
    kept = KeptDownloads()
    layers = [layer_of(bytes([n])) for n in range(MAX_KEPT + 1)]
    for number, layer in enumerate(layers[:-1]):
        assert kept.keep(layer, Path(f"tmp/{number}"), prefix(b"x")) == []
    dropped = kept.keep(layers[-1], Path("tmp/last"), prefix(b"x"))
    assert [download.path for download in dropped] == [Path("tmp/0")]
    assert sorted(str(d.path) for d in kept.take_all()) == sorted(
        [f"tmp/{n}" for n in range(1, MAX_KEPT)] + ["tmp/last"]
    )
    assert kept.take_all() == []


def test_a_layer_kept_again_in_another_file_drops_the_first() -> None:
    kept = KeptDownloads()
    layer = layer_of(b"blob")
    kept.keep(layer, Path("tmp/a"), prefix(b"b"))
    dropped = kept.keep(layer, Path("tmp/b"), prefix(b"bl"))
    assert [download.path for download in dropped] == [Path("tmp/a")]
    assert kept.keep(layer, Path("tmp/b"), prefix(b"blo")) == []  # the same file, grown


async def resumed(tmp_path: Path, blob: bytes, rest: bytes, cut: int) -> VerifyingSink:
    """A sink that goes on after the first ``cut`` bytes of ``blob`` (kept from a sink
    cut off), fed ``rest`` and finished."""
    layer = layer_of(blob)
    path = tmp_path / "blob"
    with open(path, "wb") as file:
        first = VerifyingSink(file, layer, None)
        first.FLUSH_SIZE = 1
        await first.write(blob[:cut])
        kept = first.stored_prefix()
    assert kept.size == cut
    with open(path, "r+b") as file:
        file.seek(kept.size)
        sink = VerifyingSink(file, layer, None, start=kept)
        assert sink.stored == cut
        await sink.write(rest)
        await sink.finish()
    return sink


async def test_a_sink_goes_on_from_a_kept_prefix_and_verifies_the_whole_blob(
    tmp_path: Path,
) -> None:
    blob = os.urandom(5000)
    sink = await resumed(tmp_path, blob, blob[1234:], 1234)
    assert sink.stored == len(blob)
    assert (tmp_path / "blob").read_bytes() == blob


async def test_a_resumed_sink_refuses_a_rest_that_does_not_match(tmp_path: Path) -> None:
    blob = os.urandom(5000)
    with pytest.raises(VerificationFailed):
        await resumed(tmp_path, blob, os.urandom(5000 - 1234), 1234)
