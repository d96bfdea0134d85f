"""A layer store's tree (``regfs mount --layer-store``) over a registry in memory, for the
component tests of the store and of what its layers' reads do behind."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio
import trio.testing

from regfs.domain.platform import Platform
from regfs.layers.formats.toc import TOC_DIGEST_ANNOTATION
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.tree.context import Services, TreeContext
from regfs.tree.layer_usage import LayerUsage
from regfs.tree.metadata import MetadataLimits, RegistryMetadata
from regfs.tree.node import Directory, File
from regfs.tree.store import StoreRoot
from tests.support.crafted import OCI_MANIFEST, oci_image
from tests.support.fake_transport import StreamingTransport
from tests.support.memory_registry import MemoryRegistry, Repository, sha256

HOST = "127.0.0.1:5000"


def store(registry: MemoryRegistry, cache_dir: Path, timeout: float = 5) -> StoreRoot:
    client = RegistryClient(
        ClientConfig(timeout=timeout), transport=StreamingTransport(registry.handle)
    )
    layers = LayerStore(client, open_mount_cache(client, cache_dir, 1 << 30))
    metadata = RegistryMetadata(client, MetadataLimits(ttl=60), layers.by_digest, layers.answers)
    context = TreeContext(Services(metadata, layers), Platform.parse("linux/amd64"), time.time_ns())
    return StoreRoot(context, LayerUsage())


def encoded(reference: str) -> str:
    return base64.b64encode(reference.encode()).decode()


async def directory(parent: Directory, name: str) -> Directory:
    node = await parent.lookup(name)
    assert isinstance(node, Directory)
    return node


async def read(parent: Directory, name: str) -> bytes:
    node = await parent.lookup(name)
    assert isinstance(node, File)
    return await node.read(0, 1 << 20)


def estargz_registry(blob: bytes, toc: bytes) -> MemoryRegistry:
    """A registry with ``app:1``, an image of the eStargz layer ``blob`` with ``toc``."""
    registry = MemoryRegistry()
    config, manifest = oci_image([blob], diff_ids=[sha256(gzip.decompress(blob))])
    manifest["layers"][0]["annotations"] = {TOC_DIGEST_ANNOTATION: sha256(toc)}  # type: ignore[index]
    registry.repositories["app"] = Repository(blobs={sha256(config): config, sha256(blob): blob})
    registry.put_manifest("app", "1", json.dumps(manifest).encode(), OCI_MANIFEST)
    return registry


@contextlib.asynccontextmanager
async def background_running(root: StoreRoot) -> AsyncIterator[None]:
    """The store's layer store with its background work running, as in a mount (indexing
    ahead, prefetches); stopped when the block ends."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(root.context.layers.background.run)
        await trio.testing.wait_all_tasks_blocked()
        yield
        nursery.cancel_scope.cancel()
