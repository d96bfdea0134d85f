"""Pins: kept out of every eviction, recorded before what they protect, taken back whole
when they do not fit. The chunk cache and pins on a real cache dir; ``regfs prefetch
--pin`` and ``regfs cache pin`` over the in-memory registry, on the autojump clock."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import pyfuse3
import pytest
import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import Pin, PinnedLayer, PinTooLarge, encoded, file_name
from regfs.cache.pins import Pins
from regfs.commands import cache
from regfs.commands.cached_image import NotInCache, cached_image, missing_from, pin_now
from regfs.commands.parser import build_parser
from regfs.commands.pin import PrefetchPins
from regfs.commands.prefetch import Target, prefetch
from regfs.commands.progress import Reporter
from regfs.domain.digest import Digest
from regfs.domain.platform import Platform
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.layers.pinning import pinned_layer
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from tests.support.crafted import directory, gzip_layer, member, zeros_layer
from tests.support.fake_transport import StreamingTransport
from tests.support.fuse_harness import HOST, Kernel, readdir_reply
from tests.support.memory_registry import MemoryRegistry

PLATFORM = Platform.parse("linux/amd64")
LAYER = gzip_layer(directory("etc/"), member("etc/motd", os.urandom(300 << 10)))
"""300 KiB that do not compress: one chunk."""
MIB = 1 << 20


@pytest.fixture(autouse=True)
def kernel_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readdir replies go to the harness's tokens (the ``kernel`` fixture does this too)."""
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)


def chunk(cache: ChunkCache, data: bytes, age: float) -> str:
    """``data`` stored as a chunk last used ``age`` seconds ago; its name."""
    name = Digest.of(data).hex
    cache.put(bytes.fromhex(name), data)
    then = time.time() - age
    os.utime(cache.path_of(bytes.fromhex(name)), (then, then))
    return name


def index_file(layout: CacheLayout, name: str, size: int, age: float) -> Path:
    path = layout.indexes / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(size))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def a_pin(layer: str, pieces: tuple[str, ...] = (), objects: tuple[str, ...] = ()) -> Pin:
    return Pin("h:5000/app:1", layer, layer, "linux/amd64", 0.0, dict.fromkeys(objects, 1),
               (PinnedLayer(layer, 1, 1, pieces),))  # fmt: skip


def test_eviction_leaves_what_a_pin_names_however_old(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    cache = ChunkCache(layout, 1 << 62)
    pinned_piece = chunk(cache, os.urandom(100_000), age=1000)  # the oldest: first to go
    pinned_object = chunk(cache, os.urandom(100_000), age=900)
    others = [chunk(cache, os.urandom(100_000), age=500 - n) for n in range(4)]
    layer = f"sha256:{'ab' * 32}"
    indexes = [index_file(layout, f"sha256-{'ab' * 32}{suffix}", 100_000, age=800)
               for suffix in (".sqlite", ".toc-0011.sqlite", ".blob-pieces")]  # fmt: skip
    unpinned_index = index_file(layout, f"sha256-{'cd' * 32}.sqlite", 100_000, age=950)
    Pins(layout).save(a_pin(layer, (pinned_piece,), (pinned_object,)), cache_size=None)
    ChunkCache(layout, 800_000).evict()  # 1 MB of chunks and indexes, to go under 720 kB
    assert cache.has(bytes.fromhex(pinned_piece)) and cache.has(bytes.fromhex(pinned_object))
    assert all(path.exists() for path in indexes)
    assert not unpinned_index.exists()
    assert [cache.has(bytes.fromhex(name)) for name in others] == [False, False, True, True]
    Pins(layout).remove("h:5000/app:1")
    ChunkCache(layout, 300_000).evict()
    assert not cache.has(bytes.fromhex(pinned_piece))  # unpinned: evicted as any


def test_an_eviction_waits_for_a_pin_being_written_and_honours_it(tmp_path: Path) -> None:
    """The pin's writer holds ``pins/.lock``: an eviction that began meanwhile reads the
    pins only once the record is there."""
    layout = CacheLayout(tmp_path)
    cache = ChunkCache(layout, 1 << 62)
    piece = chunk(cache, os.urandom(100_000), age=1000)
    chunk(cache, os.urandom(100_000), age=10)
    (tmp_path / "pins").mkdir(exist_ok=True)
    writer = os.open(tmp_path / "pins/.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(writer, fcntl.LOCK_EX)  # as Pins.save holds it
    eviction = threading.Thread(target=ChunkCache(layout, 150_000).evict)
    eviction.start()
    eviction.join(0.5)
    assert eviction.is_alive()  # waiting for the writer
    assert cache.has(bytes.fromhex(piece))
    pin = a_pin(f"sha256:{'ab' * 32}", (piece,))
    (tmp_path / "pins" / file_name(pin.reference)).write_bytes(encoded(pin))
    os.close(writer)  # the record is there: the eviction goes on, and leaves the piece
    eviction.join(10)
    assert not eviction.is_alive()
    assert cache.has(bytes.fromhex(piece))


async def read_image(
    registry: MemoryRegistry, image: str, cache_dir: Path, *, config: bool = True
) -> None:
    """A first mount reads the image by tag: a file (and its config)."""
    with closing(Kernel(registry, cache_dir)) as kernel:
        assert await kernel.readlink(f"{HOST}/app/1") == image.encode()
        assert len(await kernel.read(f"{HOST}/app/{image}/rootfs/etc/motd")) == 300 << 10
        if config:
            assert await kernel.read(f"{HOST}/app/{image}/config")


def client_of(registry: MemoryRegistry) -> RegistryClient:
    return RegistryClient(ClientConfig(timeout=5), transport=StreamingTransport(registry.handle))


async def prefetch_pinned(
    registry: MemoryRegistry, cache_dir: Path, *targets: str, pin_room: int = 1 << 30
) -> PrefetchPins:
    """``regfs prefetch --pin TARGETS`` with pins given ``--cache-size`` ``pin_room``."""
    client = client_of(registry)
    store = LayerStore(client, open_mount_cache(client, cache_dir, 1 << 30))
    pins = PrefetchPins(cache_dir, pin_room, PLATFORM)
    try:
        await prefetch(client, store, [Target(HOST, *t.split(":")) for t in targets], PLATFORM,
                       Reporter(), pins=pins)  # fmt: skip
    finally:
        store.close()
        await client.aclose()
    return pins


async def test_prefetch_pin_pins_the_image_before_it_fetches_a_layer(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    image = registry.push("app", "1", [LAYER])
    layer = Digest.of(LAYER)
    pinned_when_fetched: list[bool] = []
    serve = registry.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"/blobs/{layer}") and request.method == "GET":
            pin = Pins(CacheLayout(tmp_path)).get(f"{HOST}/app:1")
            pinned_when_fetched.append(pin is not None and pin.layer(str(layer)) is not None)
        return await serve(request)

    registry.handle = handle  # type: ignore[method-assign]
    pins = await prefetch_pinned(registry, tmp_path, "app:1")
    assert pinned_when_fetched == [True]  # one download, with its layer pinned already
    assert pins.complete
    (pin,) = Pins(CacheLayout(tmp_path)).all()
    assert (pin.reference, pin.digest, pin.image) == (f"{HOST}/app:1", image, image)
    (pinned_layer,) = pin.layers
    assert pinned_layer.stored is not None and len(pinned_layer.pieces) == 1
    assert len(pin.objects) == 2  # the manifest and the config
    ChunkCache(CacheLayout(tmp_path), 64 << 10).evict()  # far too small: all else goes
    with closing(Kernel(registry, tmp_path)) as kernel:
        registry.down = True
        motd = await kernel.read(f"{HOST}/app/{image.replace(':', '-')}/rootfs/etc/motd")
    assert len(motd) == 300 << 10


async def test_a_pin_too_large_for_the_compressed_sizes_fetches_no_layer(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    registry.push("app", "1", [LAYER])
    with pytest.raises(PinTooLarge) as refused:
        await prefetch_pinned(registry, tmp_path, "app:1", pin_room=200 << 10)
    assert refused.value.needs > len(LAYER) and refused.value.estimated
    assert registry.blob_gets(str(Digest.of(LAYER))) == 0
    assert Pins(CacheLayout(tmp_path)).all() == []  # refused before it was recorded


async def test_a_pin_found_too_large_once_indexed_is_taken_back_and_the_earlier_one_restored(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    """A layer of zeros: a few kB compressed, 2 MiB in the cache once indexed (its
    chunks of zeros are one chunk: pieces are counted once)."""
    registry.push("app", "1", [gzip_layer(member("small", b"small\n"))])
    await prefetch_pinned(registry, tmp_path, "app:1", pin_room=MIB)
    (earlier,) = Pins(CacheLayout(tmp_path)).all()
    registry.push("app", "1", [zeros_layer(4 * MIB)])
    pins = None
    with pytest.raises(PinTooLarge) as refused:
        pins = PrefetchPins(tmp_path, MIB, PLATFORM)
        client = client_of(registry)
        store = LayerStore(client, open_mount_cache(client, tmp_path, 1 << 30))
        try:
            await prefetch(client, store, [Target(HOST, "app", "1")], PLATFORM, Reporter(),
                           pins=pins)  # fmt: skip
        finally:
            store.close()
            await client.aclose()
    assert not refused.value.estimated and refused.value.needs > 2 * MIB
    assert pins is not None
    pins.undo()
    assert Pins(CacheLayout(tmp_path)).all() == [earlier]


async def test_cache_pin_pins_what_the_cache_holds_with_the_registry_away(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = registry.push("app", "1", [LAYER]).replace(":", "-")
    await read_image(registry, image, tmp_path)
    registry.down = True
    arguments = ["cache", "pin", "--cache-dir", str(tmp_path), "--cache-size", "64M",
                 "--platform", "linux/amd64", f"{HOST}/app:1"]  # fmt: skip
    assert cache.run(build_parser().parse_args(arguments)) == 0
    assert capsys.readouterr().out.startswith(f"pinned {HOST}/app:1: sha256:")
    (pin,) = Pins(CacheLayout(tmp_path)).all()
    stats = cache.cache_stats(tmp_path)
    assert stats["pinned"] >= len(LAYER)  # type: ignore[operator]
    (listed,) = stats["pins"]  # type: ignore[misc]
    assert listed["reference"] == f"{HOST}/app:1" and listed["pieces_missing"] == 0
    shown = ["cache", "stats", "--cache-dir", str(tmp_path)]
    assert cache.run(build_parser().parse_args(shown)) == 0
    text = capsys.readouterr().out
    assert "\npinned      1 image, holding " in text
    assert f"\n  {HOST}/app:1  {pin.image}  " in text
    ChunkCache(CacheLayout(tmp_path), 64 << 10).evict()
    with closing(Kernel(registry, tmp_path)) as kernel:
        assert len(await kernel.read(f"{HOST}/app/{image}/rootfs/etc/motd")) == 300 << 10
    unpin = ["cache", "unpin", "--cache-dir", str(tmp_path), f"{HOST}/app@{pin.image}"]
    assert cache.run(build_parser().parse_args(unpin)) == 0
    assert Pins(CacheLayout(tmp_path)).all() == []


async def test_cache_pin_says_what_the_cache_lacks(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    image = registry.push("app", "1", [LAYER]).replace(":", "-")
    layout = CacheLayout(tmp_path)
    with pytest.raises(NotInCache, match="does not know which image the tag names"):
        cached_image(layout, HOST, "app", "1", PLATFORM)
    await read_image(registry, image, tmp_path, config=False)
    found = cached_image(layout, HOST, "app", "1", PLATFORM)
    manifest = registry.repositories["app"].manifests[image.replace("-", ":", 1)][0]
    config = json.loads(manifest)["config"]["digest"]
    assert missing_from(layout, found, pin_now(layout, found, PLATFORM)) == [f"its config {config}"]
    await read_image(registry, image, tmp_path)
    found = cached_image(layout, HOST, "app", "1", PLATFORM)
    complete = pin_now(layout, found, PLATFORM)
    assert missing_from(layout, found, complete) == []
    chunks = ChunkCache(layout, 1 << 62)
    chunks.discard(bytes.fromhex(complete.layers[0].pieces[0]))
    for index in layout.indexes.glob("*.sqlite"):
        index.unlink()
    assert missing_from(layout, found, pin_now(layout, found, PLATFORM)) == [
        f"layer 0 {Digest.of(LAYER)}: not indexed"
    ]
    assert missing_from(layout, found, complete) == [
        f"layer 0 {Digest.of(LAYER)}: 1 of 1 pieces not cached"
    ]


async def test_a_layer_is_pinned_with_the_pieces_of_the_index_a_mount_reads_it_through(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    """Its whole-blob index where there is one (a TOC's chunks, cached when prefetch
    compared TOC and tar, are not needed then); otherwise every other index's. Every
    file named after the layer is held either way."""
    other = gzip_layer(member("other", os.urandom(200 << 10)))
    other_image = registry.push("other", "1", [other]).replace(":", "-")
    await read_image(registry, registry.push("app", "1", [LAYER]).replace(":", "-"), tmp_path)
    with closing(Kernel(registry, tmp_path)) as kernel:
        assert len(await kernel.read(f"{HOST}/other/{other_image}/rootfs/other")) == 200 << 10
    layout = CacheLayout(tmp_path)
    layer, other_layer = Digest.of(LAYER), Digest.of(other)
    whole = layout.indexes / f"{layer.dir_name}.sqlite"
    toc = layout.indexes / f"{layer.dir_name}.toc-0123.sqlite"  # as if: another's pieces
    toc.write_bytes((layout.indexes / f"{other_layer.dir_name}.sqlite").read_bytes())
    own = pinned_layer(layout, other_layer, len(other)).pieces
    through_whole = pinned_layer(layout, layer, len(LAYER))
    assert len(through_whole.pieces) == 1 and not set(through_whole.pieces) & set(own)
    piece = ChunkCache(layout, 1 << 62).path_of(bytes.fromhex(through_whole.pieces[0]))
    files = whole.stat().st_size + toc.stat().st_size
    assert through_whole.stored == files + piece.stat().st_size  # the tar, in one chunk
    whole.unlink()
    assert pinned_layer(layout, layer, len(LAYER)).pieces == own
