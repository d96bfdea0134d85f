"""regfs's FUSE handlers called directly, as the kernel would, without a mount or root.

``Operations`` over the real tree, metadata and ``LayerStore`` (on a temporary cache dir),
with a ``MemoryRegistry`` behind the real client. The kernel's side is played here: a
readdir token that takes a given number of entries, and an invalidation that records the
inode instead of calling into a kernel.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3

from regfs.domain.platform import Platform
from regfs.fuse.invalidation import KernelInvalidator
from regfs.fuse.operations import Operations
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.tree.context import Services, TreeContext
from regfs.tree.inodes import ROOT_INODE
from regfs.tree.last_answers import ALWAYS_STALE, StalePolicy
from regfs.tree.metadata import MetadataLimits, RegistryMetadata
from regfs.tree.namespace import Root
from tests.support.fake_transport import StreamingTransport
from tests.support.memory_registry import MemoryRegistry

HOST = "127.0.0.1:5000"
CONTEXT = pyfuse3.RequestContext()


@dataclass
class ReaddirToken:
    """What the kernel's readdir buffer takes: ``room`` entries, then no more."""

    room: int
    entries: list[tuple[bytes, pyfuse3.EntryAttributes, int]] = field(default_factory=list)


def readdir_reply(
    token: ReaddirToken, name: bytes, attributes: pyfuse3.EntryAttributes, next_id: int
) -> bool:
    """pyfuse3's ``readdir_reply``: False (and the entry not taken) once the buffer is full."""
    if len(token.entries) >= token.room:
        return False
    token.entries.append((name, attributes, next_id))
    return True


class RecordingInvalidator(KernelInvalidator):
    """Records the inodes invalidated at once, on the loop (no kernel to tell)."""

    def __init__(self, changed: Callable[[int], None]) -> None:
        self.invalidated: list[int] = []
        super().__init__(self.invalidated.append, changed)

    async def _invalidate_in_thread(self, inodes: list[int]) -> None:
        self._invalidate_all(inodes)


class Kernel:
    """One mount's ``Operations``, and the calls a kernel makes, by path."""

    def __init__(
        self,
        registry: MemoryRegistry,
        cache_dir: Path,
        *,
        ttl: float = 60.0,
        request_timeout: float = math.inf,
        status: Callable[[], Mapping[str, object]] = dict,
        stale: StalePolicy = ALWAYS_STALE,
    ) -> None:
        """``ttl``, ``request_timeout`` and ``stale``: the mount's ``--metadata-ttl``,
        ``--timeout`` and ``--no-stale``/``--max-stale``."""
        transport = StreamingTransport(registry.handle)
        client = RegistryClient(ClientConfig(timeout=5), transport=transport)
        self.layers = LayerStore(client, open_mount_cache(client, cache_dir, 1 << 30))
        metadata = RegistryMetadata(
            client, MetadataLimits(ttl=ttl), self.layers.by_digest, self.layers.answers, stale=stale
        )
        platform = Platform.parse("linux/amd64")
        context = TreeContext(
            Services(metadata, self.layers), platform, time.time_ns(), status=status
        )
        self.operations = Operations(
            Root(context), metadata_ttl=ttl, request_timeout=request_timeout
        )
        self.invalidator = RecordingInvalidator(self.operations._changed)
        self.operations.invalidator = self.invalidator

    def close(self) -> None:
        self.layers.close()

    async def lookup(self, path: str | bytes) -> pyfuse3.EntryAttributes:
        """The attributes of ``path`` (``HOST/repo/…``), looked up one name at a time as the
        kernel walks it; each name but the last must be a directory. ``""`` is the root."""
        attributes = await self.operations.getattr(pyfuse3.InodeT(ROOT_INODE), CONTEXT)
        for name in filter(None, os.fsencode(path).split(b"/")):
            if attributes.st_ino == 0:
                raise pyfuse3.FUSEError(errno.ENOENT)  # a negative entry on the way
            attributes = await self.operations.lookup(
                attributes.st_ino, pyfuse3.FileNameT(name), CONTEXT
            )
        return attributes

    async def inode(self, path: str | bytes) -> pyfuse3.InodeT:
        attributes = await self.lookup(path)
        assert attributes.st_ino, f"{path!r}: a negative entry"
        return attributes.st_ino

    async def readdir(
        self, inode: int, start: int = 0, room: int = 1 << 20
    ) -> list[tuple[bytes, pyfuse3.EntryAttributes, int]]:
        """One readdir call: the entries from ``start`` on that fit in ``room``."""
        token = ReaddirToken(room)
        await self.operations.readdir(pyfuse3.FileHandleT(inode), start, token)
        return token.entries

    async def listdir(self, path: str | bytes, room: int = 1 << 20) -> list[bytes]:
        """Every name of the directory at ``path`` but ``.`` and ``..`` (as ``os.listdir``),
        paged as getdents would."""
        inode = await self.inode(path)
        names: list[bytes] = []
        while page := await self.readdir(inode, len(names), room):
            names += [name for name, _, _ in page]
        assert names[:2] == [b".", b".."], names[:2]
        return names[2:]

    async def readlink(self, path: str | bytes) -> bytes:
        return await self.operations.readlink(await self.inode(path), CONTEXT)

    async def read(self, path: str | bytes, offset: int = 0, size: int = 1 << 20) -> bytes:
        return await self.operations.read(pyfuse3.FileHandleT(await self.inode(path)), offset, size)

    async def getxattr(self, path: str, name: str) -> bytes:
        return await self.operations.getxattr(
            await self.inode(path), pyfuse3.XAttrNameT(name.encode()), CONTEXT
        )

    async def listxattr(self, path: str) -> list[str]:
        names = await self.operations.listxattr(await self.inode(path), CONTEXT)
        return [name.decode() for name in names]


async def errno_of(request: Callable[[], Awaitable[object]]) -> int:
    """The errno a FUSE request fails with (it must fail)."""
    try:
        await request()
    except pyfuse3.FUSEError as error:
        return error.errno
    raise AssertionError("the request did not fail")
