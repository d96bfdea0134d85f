"""The record of which images each cached layer was used for (``cache/layer_images.py``):
merged, bounded, safe to write from many threads at once, swept with the layer's index."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from regfs.cache import layer_images
from regfs.cache.chunks import ChunkCache
from regfs.cache.layer_images import MAX_IMAGES, MAX_TAGS, ImageUse, LayerImages
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest

LAYER = Digest.of(b"layer")
IMAGE = Digest.of(b"image")


def use(repository: str = "r", digest: Digest = IMAGE, *tags: str) -> ImageUse:
    return ImageUse("h:5000", repository, str(digest), tags)


def test_an_image_is_recorded_once_with_every_tag_it_was_named_by(tmp_path: Path) -> None:
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use())
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r", IMAGE, "1"))
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("other"))
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r", IMAGE, "latest"))
    assert layer_images.read(CacheLayout(tmp_path), str(LAYER)) == [
        use("other"), use("r", IMAGE, "1", "latest"),  # the most recent last
    ]  # fmt: skip
    text = (tmp_path / "images" / LAYER.dir_name).read_text()
    assert text.splitlines()[1] == f"h:5000/r@{IMAGE} 1 latest"


def test_what_would_not_change_the_file_is_not_written(tmp_path: Path) -> None:
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r", IMAGE, "1"))
    path = tmp_path / "images" / LAYER.dir_name
    os.utime(path, (1, 1))
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use())  # known, and no new tag
    assert path.stat().st_mtime == 1


def test_images_and_tags_are_bounded_the_oldest_going(tmp_path: Path) -> None:
    for n in range(MAX_IMAGES + 5):
        layer_images.record(CacheLayout(tmp_path), str(LAYER), use(f"r{n}"))
    for n in range(MAX_TAGS + 3):
        layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r", IMAGE, f"t{n}"))
    found = layer_images.read(CacheLayout(tmp_path), str(LAYER))
    assert len(found) == MAX_IMAGES
    assert found[0] == use("r6") and found[-1].tags == tuple(f"t{n}" for n in range(3, 11))


def test_a_name_that_is_not_one_word_is_not_recorded(tmp_path: Path) -> None:
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r\nevil"))
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use("r", IMAGE, "a b"))
    layer_images.record(CacheLayout(tmp_path), str(LAYER), ImageUse("", "r", str(IMAGE)))
    assert layer_images.read(CacheLayout(tmp_path), str(LAYER)) == []


def test_a_damaged_file_is_read_for_what_it_still_says(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / LAYER.dir_name).write_bytes(
        b"\xff\xfe garbage\n\nnoslash@x\nh/r@" + str(IMAGE).encode() + b" 1\nh/r"
    )
    assert layer_images.read(CacheLayout(tmp_path), str(LAYER)) == [
        ImageUse("h", "r", str(IMAGE), ("1",))
    ]
    assert layer_images.read(CacheLayout(tmp_path), str(Digest.of(b"none"))) == []


def test_threads_recording_at_once_lose_no_image(tmp_path: Path) -> None:
    threads = [
        threading.Thread(
            target=layer_images.record, args=(CacheLayout(tmp_path), str(LAYER), use(f"r{n}"))
        )
        for n in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {u.repository for u in layer_images.read(CacheLayout(tmp_path), str(LAYER))} == {
        f"r{n}" for n in range(16)
    }
    assert sorted(os.listdir(tmp_path / "images")) == [".lock", LAYER.dir_name]


def test_a_sweep_keeps_the_records_of_indexed_layers_only(tmp_path: Path) -> None:
    indexed, evicted, pruned = Digest.of(b"1"), Digest.of(b"2"), Digest.of(b"3")
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / f"{indexed.dir_name}.toc-ab.sqlite").write_bytes(b"x")
    for layer in (indexed, evicted, pruned):
        layer_images.record(CacheLayout(tmp_path), str(layer), use())
    later = time.time() + 60  # as if recorded after the sweep listed the indexes
    os.utime(tmp_path / "images" / pruned.dir_name, (later, later))
    abandoned = tmp_path / "images" / f".{indexed.dir_name}.999999999.0123abcd.tmp"
    abandoned.write_text("half")
    layer_images.sweep(CacheLayout(tmp_path))
    assert set(os.listdir(tmp_path / "images")) == {
        ".lock", indexed.dir_name, pruned.dir_name,  # pruned's index may be new: kept
    }  # fmt: skip
    layer_images.forget(CacheLayout(tmp_path), [str(pruned)])
    assert layer_images.read(CacheLayout(tmp_path), str(pruned)) == []


def test_evicting_an_index_sweeps_its_layer_s_record(tmp_path: Path) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 64 << 20)
    (tmp_path / "indexes").mkdir()
    index = tmp_path / "indexes" / f"{LAYER.dir_name}.sqlite"
    index.write_bytes(b"i" * 4096)
    layer_images.record(CacheLayout(tmp_path), str(LAYER), use())
    cache.max_bytes = 1024
    cache.evict()
    assert not index.exists()
    assert layer_images.read(CacheLayout(tmp_path), str(LAYER)) == []


async def test_a_process_records_a_use_once_and_never_fails_a_read(tmp_path: Path) -> None:
    recorder = LayerImages(CacheLayout(tmp_path))
    await recorder.note(LAYER, "h", "r", IMAGE, tag="1")
    path = tmp_path / "images" / LAYER.dir_name
    path.unlink()
    await recorder.note(LAYER, "h", "r", IMAGE, tag="1")  # remembered: not written again
    assert not path.exists()
    await recorder.note(LAYER, "h", "r", None)  # no image (index push): nothing to record
    assert not path.exists()
    (tmp_path / "images" / ".lock").unlink()
    (tmp_path / "images").rmdir()
    (tmp_path / "images").write_text("not a directory")
    await recorder.note(LAYER, "h", "other", IMAGE)  # logged, not raised
