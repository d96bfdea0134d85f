"""A layer store's SOCI layer: ``info`` is answered from the zTOC's own sizes, before the
zTOC is read whole."""

from __future__ import annotations

import gzip
import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.domain.soci import (
    INDEX_DIGEST_ANNOTATION,
    SOCI_INDEX_V1,
    SOCI_INDEX_V2,
    ZTOC_MEDIA_TYPE,
    soci_index_manifest,
)
from regfs.layers import builders
from regfs.layers.ztoc_builder import build_ztoc
from regfs.tree.store import StoreLayerDir
from tests.support.crafted import OCI_MANIFEST, gzip_layer, member, oci_image
from tests.support.memory_registry import MemoryRegistry, Repository, sha256
from tests.support.store_tree import HOST, background_running, directory, encoded, read, store

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def soci_registry(tmp_path: Path, layer: bytes) -> MemoryRegistry:
    """A registry with ``app:1``, an image of the gzip ``layer`` whose manifest names a
    SOCI v2 index of it (as ``soci convert`` makes)."""
    (tmp_path / "layer").write_bytes(layer)
    ztoc = build_ztoc(tmp_path / "layer", span_size=64 << 10)
    layer_descriptor = Descriptor(GZIP_LAYER, Digest.of(layer), len(layer))
    ztoc_descriptor = Descriptor(ZTOC_MEDIA_TYPE, Digest.of(ztoc), len(ztoc))
    config, manifest = oci_image([layer], diff_ids=[sha256(gzip.decompress(layer))])
    v1 = json.loads(soci_index_manifest([(ztoc_descriptor, layer_descriptor)],
                                        layer_descriptor, 64 << 10, "test"))  # fmt: skip
    del v1["subject"]  # v2: named by the image, pointing at nothing
    v1["config"]["mediaType"] = SOCI_INDEX_V2
    assert SOCI_INDEX_V1 not in json.dumps(v1)
    index = json.dumps(v1).encode()
    registry = MemoryRegistry()
    registry.repositories["app"] = Repository(blobs={
        sha256(config): config, sha256(layer): layer, sha256(ztoc): ztoc, sha256(b"{}"): b"{}",
    })  # fmt: skip
    manifest["annotations"] = {INDEX_DIGEST_ANNOTATION: registry.put_manifest(
        "app", "soci-index", index, OCI_MANIFEST)}  # fmt: skip
    registry.put_manifest("app", "1", json.dumps(manifest).encode(), OCI_MANIFEST)
    return registry


async def test_info_is_answered_before_the_ztoc_is_read_whole(
    autojump_clock: trio.abc.Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman waits for each layer's ``info``: its size is the zTOC's, known as soon as
    the zTOC is fetched and checked against its digest, not once it is parsed and laid out
    (tens of milliseconds for a distribution's layer); the index, once built, agrees."""
    tool = random.Random(1).randbytes(300_000)
    layer = gzip_layer(
        member("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), member("bin/tool", tool)
    )
    registry = soci_registry(tmp_path, layer)
    go = threading.Event()
    build_soci_index = builders.build_soci_index

    def held(*args: Any, **kwargs: Any) -> list[str]:
        assert go.wait(20), "info was not answered meanwhile"
        return build_soci_index(*args, **kwargs)

    monkeypatch.setattr(builders, "build_soci_index", held)
    root = store(registry, tmp_path / "cache", timeout=1e6)  # worker threads run meanwhile
    async with background_running(root):
        layer_dir = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(layer))
        with trio.fail_after(30):
            info = json.loads(await read(layer_dir, "info"))
        go.set()
        assert isinstance(layer_dir, StoreLayerDir)
        index = await root.context.layers.index(layer_dir.layer)
        assert info["diff-size"] == index.meta.uncompressed_size == len(gzip.decompress(layer))
        bin_dir = await directory(await directory(layer_dir, "diff"), "bin")
        assert await read(bin_dir, "tool") == tool
