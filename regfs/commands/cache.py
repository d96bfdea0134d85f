"""``regfs cache stats | prune | verify``: the cache dir, with or without a mount using it.

Application layer. The cache is safe to share (``cache/chunks.py``): pruning here is the
eviction a second mount would do, so a running mount fetches what was pruned again when
it is read, and verifying removes only chunks whose bytes no longer match their name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from regfs.cache import layer_images
from regfs.cache.chunks import ChunkCache
from regfs.cache.layer_images import ImageUse
from regfs.commands.mountpoint import mounted_type
from regfs.layers.store import IndexMeta, LayerIndex
from regfs.layers.toc_check import check_cached_toc
from regfs.tree.namespace import STATUS_XATTR

KINDS = {"chunks": "chunks", "indexes": "indexes", "temporary": "tmp",
         "images": layer_images.DIRECTORY}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LayerCached:
    digest: str
    access: str
    """``compression`` of its index: gzip, zstd, none, estargz, zstd:chunked, soci."""
    cached: float
    """Share of the layer's pieces in the cache (0 to 1)."""
    size: int
    """The layer blob's (compressed) size."""
    images: tuple[ImageUse, ...]
    """The images mounts and ``regfs prefetch`` used it for, as far as the cache knows."""


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


def _index_files(cache_dir: Path, digests: Collection[str] | None) -> list[Path]:
    """The index files of the layers of ``digests`` (all if None): a layer may have one
    built from its blob and others from TOCs or zTOCs (``<algorithm>-<hex>[.…].sqlite``)."""
    paths = sorted((cache_dir / "indexes").glob("sha*.sqlite"))
    if digests is None:
        return paths
    names = {digest.replace(":", "-") for digest in digests}
    return [path for path in paths if path.name.split(".")[0] in names]


def _pieces(path: Path) -> tuple[IndexMeta, list[tuple[bytes, int]]] | None:
    index = LayerIndex.open(path)
    if index is None:
        return None
    try:
        return index.meta, index.pieces_in()
    finally:
        index.close()


def layers(cache_dir: Path, digests: Collection[str] | None = None) -> list[LayerCached]:
    """Every layer (of ``digests``, if given) with an index in the cache, and how much of
    it is cached."""
    chunks = ChunkCache(cache_dir, 1 << 62)
    found = []
    for path in _index_files(cache_dir, digests):
        read = _pieces(path)
        if read is None:
            continue
        meta, pieces = read
        total = sum(weight for _, weight in pieces)
        present = sum(weight for sha256, weight in pieces if chunks.has(sha256))
        found.append(LayerCached(meta.digest, meta.compression,
                                 present / total if total else 1.0, meta.compressed_size,
                                 tuple(layer_images.read(cache_dir, meta.digest))))  # fmt: skip
    return found


def forget(cache_dir: Path, digests: Collection[str]) -> int:
    """Delete the chunks and indexes of the layers of ``digests``, and the record of the
    images that used them; the bytes freed. (A chunk another layer shares goes too:
    whoever needs it fetches it again.)"""
    chunks = ChunkCache(cache_dir, 1 << 62)
    freed = 0
    for path in _index_files(cache_dir, digests):
        read = _pieces(path)
        for sha256, _ in read[1] if read else ():
            freed += _unlink(chunks.path_of(sha256))
        freed += _unlink(path)
    layer_images.forget(cache_dir, digests)
    return freed


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


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


def toc_disagreements(cache_dir: Path) -> dict[str, str]:
    """Layer digest → how its TOC disagrees with its tar, for every layer whose TOC index
    and whole-blob index are both in the cache (see ``layers.toc_check``)."""
    chunks = ChunkCache(cache_dir, 1 << 62)
    found = {}
    for toc_index in sorted((cache_dir / "indexes").glob("sha*.toc-*.sqlite")):
        whole = toc_index.with_name(toc_index.name.split(".")[0] + ".sqlite")
        if whole.exists():
            verdict = check_cached_toc(toc_index, whole, chunks)
            if verdict is not None:
                found[toc_index.name.split(".")[0].replace("-", ":", 1)] = verdict
    return found


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
