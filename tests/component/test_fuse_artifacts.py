"""Images and artifacts of the shapes registries hold beside plain images, through
``Operations``: OCI 1.1 artifacts (an empty or non-JSON config, blobs that are no tar:
signatures, attestations, wasm, models), images of no layer, and indexes whose platform
entries would make no file name. In-memory registry, autojump clock."""

from __future__ import annotations

import json

import trio

from tests.support.crafted import OCI_MANIFEST, descriptor
from tests.support.fuse_harness import HOST, Kernel
from tests.support.memory_registry import MemoryRegistry, Repository, sha256

IMAGE_CONFIG = (
    "application/vnd.oci.image.config.v1+json",
    b'{"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": []}}',
)


def push(
    registry: MemoryRegistry,
    tag: str,
    config: tuple[str, bytes],
    layers: list[tuple[str, bytes]],
    **fields: object,
) -> str:
    """An OCI manifest of ``config`` and ``layers`` ((media type, bytes) each) as
    ``art:tag``, with any other top-level ``fields``; the path of its digest dir."""
    stored = registry.repositories.setdefault("art", Repository())
    for _, blob in (config, *layers):
        stored.blobs[sha256(blob)] = blob
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, **fields,
        "config": descriptor(*config), "layers": [descriptor(*layer) for layer in layers],
    }  # fmt: skip
    digest = registry.put_manifest("art", tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"{HOST}/art/{digest.replace(':', '-')}"


async def test_an_image_of_no_layer_has_an_empty_rootfs(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    image = push(registry, "scratch", IMAGE_CONFIG, [])
    assert await kernel.listdir(image) == [b"manifest", b"config", b"rootfs"]
    assert await kernel.listdir(f"{image}/rootfs") == []
    root = await kernel.lookup(f"{image}/rootfs")
    assert (root.st_mode & 0o7777, root.st_uid, root.attr_timeout > 0) == (0o755, 0, True)
    assert (await kernel.lookup(f"{image}/rootfs/etc")).st_ino == 0  # a negative entry
