"""The layer store's tree (``tree/store.py``) over an in-memory registry: below the base64
of a reference only its image's layers, each with the ``info`` podman records and the
verified ``blob``; podman's ``use`` and ``rmdir`` counted and answered ENOENT, any other
write refused. Autojump clock."""

from __future__ import annotations

import gzip
import json
import logging
import random
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.errors import (
    MalformedContent,
    NotFound,
    ReadOnly,
    Unavailable,
    VerificationFailed,
)
from regfs.layers.diff_sizes import DiffSizes
from regfs.layers.index import build
from regfs.tree.node import Directory, File
from regfs.tree.store import StoreLayerDir
from tests.support.crafted import gzip_layer, member
from tests.support.estargz_writer import estargz
from tests.support.memory_registry import MemoryRegistry, sha256
from tests.support.store_tree import (
    HOST,
    background_running,
    directory,
    encoded,
    estargz_registry,
    read,
    store,
)

LAYERS = [gzip_layer(member("etc/os-release", b"ID=test\n")),
          gzip_layer(member("bin/tool", b"#!/bin/sh\n" * 100))]  # fmt: skip
DIFF_IDS = [sha256(gzip.decompress(layer)) for layer in LAYERS]


def held_index_writes(monkeypatch: pytest.MonkeyPatch, failure: str) -> threading.Event:
    """Have every index written only once the event returned is set (failing with
    ``failure`` if it is not within a minute)."""
    go = threading.Event()
    write_index = build.write_index

    def held_write(*args: Any, **kwargs: Any) -> None:
        assert go.wait(60), failure
        write_index(*args, **kwargs)

    monkeypatch.setattr(build, "write_index", held_write)
    return go


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.push("app", "1", LAYERS, DIFF_IDS)
    return registry


async def test_a_reference_shows_its_layers_with_what_podman_records(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    root = store(registry, tmp_path)
    image = await directory(root, encoded(f"{HOST}/app:1"))
    assert [name for name, _ in await image.entries()] == [sha256(layer) for layer in LAYERS]
    layer = await directory(image, sha256(LAYERS[1]))
    assert [name for name, _ in await layer.entries()] == ["diff", "info", "blob"]
    assert json.loads(await read(layer, "info")) == {
        "diff-digest": DIFF_IDS[1], "diff-size": len(gzip.decompress(LAYERS[1])),
        "compressed-diff-digest": sha256(LAYERS[1]), "compressed-size": len(LAYERS[1]),
        "compression": 2,
    }  # fmt: skip
    assert await read(layer, "blob") == LAYERS[1]
    diff = await directory(layer, "diff")
    assert [name for name, _ in await diff.entries()] == ["bin"]


@pytest.mark.parametrize("form", ["{host}/app@{digest}", "{host}/app:1@{digest}"])
async def test_a_reference_by_digest_is_the_image_it_names(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry, form: str
) -> None:
    """As containers/image writes a pull by digest: with or without the tag beside it."""
    digest = registry.repositories["app"].tags["1"]
    reference = form.format(host=HOST, digest=digest)
    image = await directory(store(registry, tmp_path), encoded(reference))
    assert [name for name, _ in await image.entries()] == [sha256(layer) for layer in LAYERS]


async def test_what_is_not_the_image_s_is_not_found(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    """podman pulls a layer itself wherever the store says ENOENT: nothing below a
    reference but its image's layers, and those only with diff, info and blob."""
    other = gzip_layer(member("other", b"not in app:1\n"))
    registry.push("app", "2", [other], [sha256(gzip.decompress(other))])
    root = store(registry, tmp_path)
    for name in ("not base64!", encoded("no reference at all")):
        with pytest.raises(NotFound):
            await root.lookup(name)
    with pytest.raises(NotFound):  # a tag the registry does not have
        await (await directory(root, encoded(f"{HOST}/app:missing"))).entries()
    image = await directory(root, encoded(f"{HOST}/app:1"))
    for name in (sha256(other), "sha256:" + "0" * 64, "not-a-digest"):
        with pytest.raises(NotFound):
            await image.lookup(name)
    with pytest.raises(NotFound):
        await (await directory(image, sha256(LAYERS[0]))).lookup("use")


async def test_a_layer_served_stays_found_once_its_tag_names_another_image_or_none(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    """podman's record of a store layer is a link to ``STORE/<ref>/<digest>/diff``,
    followed at every container start: once the tag moved or was deleted (seen by a store
    mounted again on the cache, as by one past the TTL), the layers it served are still
    there, with the same ``info``; a layer of no record, not in the image named now, is
    not."""
    reference = encoded(f"{HOST}/app:1")
    root = store(registry, tmp_path)
    served = await directory(await directory(root, reference), sha256(LAYERS[0]))
    info = await read(served, "info")
    other = gzip_layer(member("other", b"app:1 now\n"))
    registry.push("app", "1", [other], [sha256(gzip.decompress(other))])
    image = await directory(store(registry, tmp_path), reference)
    assert [name for name, _ in await image.entries()] == [sha256(other)]
    assert await read(await directory(image, sha256(LAYERS[0])), "info") == info
    with pytest.raises(NotFound):  # of the image before, but never indexed: no record
        await image.lookup(sha256(LAYERS[1]))
    del registry.repositories["app"].tags["1"]
    image = await directory(store(registry, tmp_path), reference)
    assert await read(await directory(image, sha256(LAYERS[0])), "info") == info
    with pytest.raises(NotFound):
        await image.lookup(sha256(other))


async def test_an_index_serves_the_image_of_the_store_s_platform(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    arm = gzip_layer(member("arch", b"arm64\n"))
    arm_image = registry.push("app", "arm", [arm], [sha256(gzip.decompress(arm))])
    amd_image = registry.repositories["app"].tags["1"]
    registry.push_index("app", "multi", {"linux/amd64": amd_image, "linux/arm64": arm_image})
    image = await directory(store(registry, tmp_path), encoded(f"{HOST}/app:multi"))
    assert [name for name, _ in await image.entries()] == [sha256(layer) for layer in LAYERS]
    with pytest.raises(NotFound):  # podman pulling for arm64 pulls this layer itself
        await image.lookup(sha256(arm))


async def test_use_and_rmdir_are_counted_and_answered_enoent_other_writes_refused(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    root = store(registry, tmp_path)
    reference = f"{HOST}/app:1"
    image = await directory(root, encoded(reference))
    layers = [await directory(image, sha256(layer)) for layer in LAYERS]
    for layer in (*layers, layers[0]):
        with pytest.raises(NotFound):
            await layer.create("use")
    assert root.usage.in_use() == sorted(
        [{"reference": reference, "layer": sha256(LAYERS[0]), "uses": 2},
         {"reference": reference, "layer": sha256(LAYERS[1]), "uses": 1}],
        key=lambda layer: str(layer["layer"]),
    )  # fmt: skip
    assert [name for name, _ in await root.entries()] == [encoded(reference)]
    for layer_digest in (sha256(LAYERS[0]), sha256(LAYERS[1]), sha256(LAYERS[1])):
        with pytest.raises(NotFound):
            await image.remove_directory(layer_digest)  # never below none
    assert root.usage.in_use() == [{"reference": reference, "layer": sha256(LAYERS[0]), "uses": 1}]
    refused = (layers[0].create("other"), root.create("use"), layers[0].remove_directory("diff"))
    for write in refused:
        with pytest.raises(ReadOnly):
            await write


async def test_a_blob_that_is_not_its_digest_is_never_served(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    digest = sha256(LAYERS[0])
    blob = LAYERS[0]
    registry.repositories["app"].blobs[digest] = blob[:-5] + bytes(5)
    layer = await directory(await directory(store(registry, tmp_path), encoded(f"{HOST}/app:1")),
                            digest)  # fmt: skip
    node = await layer.lookup("blob")
    assert isinstance(node, File)
    with pytest.raises(VerificationFailed):
        await node.read(0, 100)


async def test_the_first_layer_looked_up_begins_indexing_them_all(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    """podman asks for one layer's info after the other, waiting for each: the others are
    indexed in the background meanwhile, and asking for them fetches nothing more."""
    root = store(registry, tmp_path)
    upper = sha256(LAYERS[1])
    index_file = tmp_path / "indexes" / f"{upper.replace(':', '-')}.sqlite"
    async with background_running(root):
        image = await directory(root, encoded(f"{HOST}/app:1"))
        await image.lookup(sha256(LAYERS[0]))
        for _ in range(1000):  # indexing runs in a worker thread: virtual seconds are free
            if index_file.exists():
                break
            await trio.sleep(1)
        assert registry.blob_gets(upper) == 1
        info = json.loads(await read(await directory(image, upper), "info"))
        assert info["diff-digest"] == DIFF_IDS[1]
        assert registry.blob_gets(upper) == 1


async def test_blob_pieces_fetched_again_come_in_one_range_request(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    """A blob's pieces evicted since its verified pass come again through the getter:
    adjacent ones in one Range request (here 4 pieces of 1 MiB), each checked."""
    big = gzip_layer(member("data/big", random.Random(5).randbytes(3_500_000)))
    registry.push("big", "1", [big], [sha256(gzip.decompress(big))])
    path = (encoded(f"{HOST}/big:1"), sha256(big))
    first = await directory(await directory(store(registry, tmp_path), path[0]), path[1])
    assert await read_all(first, "blob") == big
    assert registry.blob_gets(sha256(big)) == 1
    shutil.rmtree(CacheLayout(tmp_path).chunks)  # evicted; the pieces' list is kept
    again = await directory(await directory(store(registry, tmp_path), path[0]), path[1])
    assert await read_all(again, "blob") == big
    assert registry.blob_gets(sha256(big)) == 2


async def read_all(parent: Directory, name: str) -> bytes:
    node = await parent.lookup(name)
    assert isinstance(node, File)
    return await node.read(0, 1 << 30)


async def test_the_files_a_container_start_reads_are_fetched_once_indexed(
    autojump_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A layer looked up through the store has /etc/passwd, /etc/group and libc fetched
    ahead, before anything reads them; a file no start needs is fetched only when read."""
    caplog.set_level(logging.INFO)
    start = {
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "etc/group": b"root:x:0:\n",
        "usr/lib/x86_64-linux-gnu/libc.so.6": random.Random(1).randbytes(300_000),
    }
    other = random.Random(2).randbytes(200_000)
    blob, toc = estargz([*start.items(), ("usr/share/doc/big", other)], 64 << 10)
    registry = estargz_registry(blob, toc)
    # worker threads index and check while virtual time runs: no deadline may pass meanwhile
    root = store(registry, tmp_path, timeout=1e6)
    async with background_running(root):
        image = await directory(root, encoded(f"{HOST}/app:1"))
        layer = await directory(image, sha256(blob))
        with trio.fail_after(1000):
            while "fetched what a container's start reads" not in caplog.text:
                await trio.sleep(0.01)
        fetched = registry.blob_gets(sha256(blob))
        diff = await directory(layer, "diff")
        for path, data in start.items():
            *parents, name = path.split("/")
            node = diff
            for parent in parents:
                node = await directory(node, parent)
            assert await read(node, name) == data
        assert registry.blob_gets(sha256(blob)) == fetched
        doc = await directory(await directory(await directory(diff, "usr"), "share"), "doc")
        assert await read(doc, "big") == other
        assert registry.blob_gets(sha256(blob)) > fetched


async def test_info_is_answered_before_the_toc_index_is_written(
    autojump_clock: trio.abc.Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman waits for ``info``, then has work of its own: the size is known once the TOC
    is laid out, so ``info`` does not wait for the tree and the SQLite file; the index,
    once written, gives the same size."""
    blob, toc = estargz([("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                         ("bin/tool", random.Random(3).randbytes(100_000))], 64 << 10)  # fmt: skip
    registry = estargz_registry(blob, toc)
    written = held_index_writes(monkeypatch, "info was not answered meanwhile")
    root = store(registry, tmp_path, timeout=1e6)  # see the test above
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        info = json.loads(await read(layer, "info"))
        assert not list((tmp_path / "indexes").glob("*.sqlite"))
        written.set()
        assert isinstance(layer, StoreLayerDir)
        index = await root.context.layers.index(layer.layer)
        assert info["diff-size"] == index.meta.uncompressed_size > 100_000


async def test_an_estargz_prefetch_begins_before_the_index_is_written(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The files before ``.prefetch.landmark`` are fetched from the moment the TOC is laid
    out, while the tree and the SQLite file are made; read afterwards, they need no
    request."""
    caplog.set_level(logging.INFO)
    first = random.Random(4).randbytes(150_000)
    blob, toc = estargz([("etc/first", first), (".prefetch.landmark", b"v"),
                         ("usr/rest", random.Random(5).randbytes(150_000))], 64 << 10)  # fmt: skip
    registry = estargz_registry(blob, toc)
    prefetched = held_index_writes(monkeypatch, "the prefetch waited for the index")
    root = store(registry, tmp_path, timeout=1e6)  # see the tests above
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        with trio.fail_after(1000):
            while "prefetched the first" not in caplog.text:
                await trio.sleep(0.01)
        assert not list((tmp_path / "indexes").glob("*.sqlite"))
        prefetched.set()
        fetched = registry.blob_gets(sha256(blob))
        etc = await directory(await directory(layer, "diff"), "etc")
        assert await read(etc, "first") == first
        assert registry.blob_gets(sha256(blob)) == fetched


@pytest.mark.parametrize("write_fails", [False, True])
async def test_a_layer_s_files_are_looked_up_and_read_while_its_index_is_written(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    write_fails: bool,
) -> None:
    """podman looks into ``diff/`` right after ``info``: the layer's tree answers from
    memory while its SQLite file is written; once written, the same index reads the file.
    A file that cannot be written is one warning, and the mount goes on from memory."""
    tool = random.Random(6).randbytes(100_000)
    blob, toc = estargz([("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                         ("bin/tool", tool)], 64 << 10)  # fmt: skip
    registry = estargz_registry(blob, toc)
    looked_up = held_index_writes(monkeypatch, "the lookups waited for the index")
    if write_fails:

        def failing_write(*args: Any, **kwargs: Any) -> None:
            assert looked_up.wait(60), "the lookups waited for the index"
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(build, "write_index", failing_write)
    root = store(registry, tmp_path, timeout=1e6)  # see the tests above
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        assert isinstance(layer, StoreLayerDir)
        bin_dir = await directory(await directory(layer, "diff"), "bin")
        assert await read(bin_dir, "tool") == tool
        assert not list((tmp_path / "indexes").glob("*.sqlite"))
        index = await root.context.layers.index(layer.layer)
        assert index.identity[1] == 0  # answering from memory
        looked_up.set()

        def settled() -> bool:
            if write_fails:
                return "its index could not be written" in caplog.text
            return index.identity[1] != 0  # answering from the file

        with trio.fail_after(1000):
            while not settled():
                await trio.sleep(0.01)
        assert await root.context.layers.index(layer.layer) is index
        assert bool(list((tmp_path / "indexes").glob("*.sqlite"))) is not write_fails
        etc = await directory(await directory(layer, "diff"), "etc")
        assert await read(etc, "passwd") == b"root:x:0:0::/root:/bin/sh\n"


async def test_waiting_for_a_size_ends_with_it_or_with_why_there_is_none(
    autojump_clock: trio.abc.Clock,
) -> None:
    sizes = DiffSizes()
    layer, other = Digest.parse(sha256(b"layer")), Digest.parse(sha256(b"other"))
    outcomes: dict[Digest, object] = {}

    async def wait(digest: Digest) -> None:
        try:
            outcomes[digest] = await sizes.wait(digest)
        except (MalformedContent, Unavailable) as error:
            outcomes[digest] = error

    async def fails() -> int:
        raise MalformedContent("no tree")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, layer)
        nursery.start_soon(wait, other)
        await trio.testing.wait_all_tasks_blocked()
        sizes.known(layer, 5)
        sizes.known(layer, 6)  # the first said is kept
        with pytest.raises(MalformedContent):
            await sizes.follow(other, fails)
    assert outcomes[layer] == 5 and isinstance(outcomes[other], MalformedContent)
    assert await sizes.wait(layer) == 5
    with trio.move_on_after(1) as waiting:
        await sizes.wait(other)  # another try is waited for, not the old error
    assert waiting.cancelled_caught
    with pytest.raises(MalformedContent):  # told, then its index could not be written
        await sizes.follow(layer, fails)
    with trio.move_on_after(1) as waiting:
        await sizes.wait(layer)  # another try is waited for, not the size told
    assert waiting.cancelled_caught

    async def never() -> int:
        await trio.sleep_forever()
        raise AssertionError

    third = Digest.parse(sha256(b"third"))
    with trio.fail_after(60):  # indexing cancelled: those waiting hear so, at once
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, third)
            async with trio.open_nursery() as indexing:
                indexing.start_soon(sizes.follow, third, never)
                await trio.testing.wait_all_tasks_blocked()
                indexing.cancel_scope.cancel()
    assert isinstance(outcomes.get(third), Unavailable)


async def test_two_references_to_one_image_are_two_diff_dirs(
    autojump_clock: trio.abc.Clock, tmp_path: Path, registry: MemoryRegistry
) -> None:
    """A directory is one path to the kernel (it moves the one dentry of a directory
    inode to wherever it was found last): a tag and a digest naming one image show two."""
    root = store(registry, tmp_path)
    digest = registry.repositories["app"].tags["1"]
    diffs = [
        await directory(await directory(await directory(root, encoded(reference)),
                                        sha256(LAYERS[0])), "diff")
        for reference in (f"{HOST}/app:1", f"{HOST}/app@{digest}")
    ]  # fmt: skip
    assert diffs[0].key != diffs[1].key
