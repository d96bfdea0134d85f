"""``regfs cache stats | prune | verify``: the cache dir, with or without a mount using it.

Application layer. The cache is safe to share (``cache/chunks.py``): pruning here is the
eviction a second mount would do, so a running mount fetches what was pruned again when
it is read, and verifying removes only chunks whose bytes no longer match their name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import trio

from regfs.cache.chunks import ChunkCache
from regfs.layers.store import LayerIndex
from regfs.mountpoint import mounted_type
from regfs.tree.namespace import STATUS_XATTR

KINDS = {"chunks": "chunks", "indexes": "indexes", "temporary": "tmp"}


@dataclass(frozen=True, slots=True)
class LayerCached:
    digest: str
    access: str
    """``compression`` of its index: gzip, zstd, none, estargz, zstd:chunked, soci."""
    cached: float
    """Share of the layer's pieces in the cache (0 to 1)."""


def sizes(cache_dir: Path) -> dict[str, int]:
    """Bytes in each part of the cache dir."""
    return {kind: _bytes_under(cache_dir / name) for kind, name in KINDS.items()}


def _bytes_under(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def layers(cache_dir: Path) -> list[LayerCached]:
    """Every layer with an index in the cache, and how much of it is cached."""
    chunks = ChunkCache(cache_dir, 1 << 62)
    found = []
    for path in sorted((cache_dir / "indexes").glob("sha*.sqlite")):
        index = LayerIndex.open(path)
        if index is None:
            continue
        try:
            pieces = trio.run(index.pieces)
        finally:
            index.close()
        total = sum(weight for _, weight in pieces)
        present = sum(weight for sha256, weight in pieces if chunks.has(sha256))
        found.append(LayerCached(index.meta.digest, index.meta.compression,
                                 present / total if total else 1.0))  # fmt: skip
    return found


def mounts_using(cache_dir: Path) -> list[dict[str, object]]:
    """The status of every running regfs mount whose cache dir is ``cache_dir``."""
    found = []
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[2:3] == ["fuse.regfs"]]
    for point in points:
        path = point.encode().decode("unicode_escape")  # /proc escapes spaces as \040
        if mounted_type(path) != "fuse.regfs":
            continue
        try:
            state = json.loads(os.getxattr(path, STATUS_XATTR))
        except (OSError, ValueError):
            continue
        if Path(state["cache"]["dir"]).resolve() == cache_dir.resolve():
            found.append(state)
    return found


def prune(cache_dir: Path, max_size: int) -> tuple[int, int]:
    """Evict the least recently used chunks and indexes until the dir is within
    ``max_size`` (90 % of it, as a mount evicts); (bytes before, bytes after)."""
    cache = ChunkCache(cache_dir, max_size)
    before = cache.usage()
    if before > max_size:
        cache.evict()
    return before, ChunkCache(cache_dir, max_size).usage()


def verify(cache_dir: Path) -> tuple[int, list[str]]:
    """Re-hash every stored chunk; remove those whose bytes do not match their name.
    (chunks checked, names removed)."""
    checked = 0
    removed = []
    for bucket in sorted((cache_dir / "chunks").glob("??")):
        for path in sorted(bucket.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            checked += 1
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # evicted meanwhile by a mount
            if hashlib.sha256(data).hexdigest() != path.name:
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return checked, removed
