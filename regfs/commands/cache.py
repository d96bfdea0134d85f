"""``regfs cache stats | prune | verify``: the cache dir, with or without a mount using it
(``pin`` and ``unpin`` are ``pin.py``'s).

Application layer. The cache is safe to share (``cache/chunks.py``): pruning here is the
eviction a second mount would do, so a running mount fetches what was pruned again when
it is read, and verifying removes only chunks whose bytes no longer match their name.
Neither prunes what is pinned (``prune --image`` of a pinned image leaves it, and says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from regfs.cache import layer_images
from regfs.cache.chunks import ChunkCache
from regfs.cache.layer_images import ImageUse
from regfs.cache.layout import CacheLayout
from regfs.commands import common, pin
from regfs.commands.mount_state import mount_state
from regfs.commands.mountpoint import regfs_mounts
from regfs.commands.status import format_cache_stats, human_size
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.reference import parse_image_reference
from regfs.layers.index.index_file import opened
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexMeta
from regfs.layers.toc_check import check_cached_toc
from regfs.registry.client import RegistryClient
from regfs.registry.images import resolve_image


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
    return {kind: _bytes_under(path) for kind, path in CacheLayout(cache_dir).parts().items()}


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
    paths = sorted(CacheLayout(cache_dir).indexes.glob("sha*.sqlite"))
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
    layout = CacheLayout(cache_dir)
    chunks = ChunkCache(layout, 1 << 62)
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
                                 tuple(layer_images.read(layout, meta.digest))))  # fmt: skip
    return found


def forget(cache_dir: Path, digests: Collection[str]) -> tuple[int, int]:
    """Delete the chunks and indexes of the layers of ``digests``, and the record of the
    images that used them, except what a pin holds; (bytes freed, bytes kept for pins).
    (A chunk another layer shares goes too: whoever needs it fetches it again.)"""
    chunks = ChunkCache(CacheLayout(cache_dir), 1 << 62)
    freed = kept = 0
    with chunks.pins.held() as pinned:
        for path in _index_files(cache_dir, digests):
            read = _pieces(path)
            for sha256, _ in read[1] if read else ():
                if pinned.keeps_chunk(sha256.hex()):
                    kept += _size(chunks.path_of(sha256))
                else:
                    freed += _unlink(chunks.path_of(sha256))
            if pinned.keeps_index_file(path.name):
                kept += _size(path)
            else:
                freed += _unlink(path)
    layer_images.forget(CacheLayout(cache_dir),
                        [digest for digest in digests
                         if not pinned.keeps_index_file(digest.replace(":", "-"))])  # fmt: skip
    return freed, kept


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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
    for path in regfs_mounts():
        try:
            state = json.loads(mount_state(path))
        except (OSError, ValueError):
            continue
        if Path(state["cache"]["dir"]).resolve() == cache_dir.resolve():
            found.append(state)
    return found


def prune(cache_dir: Path, max_size: int) -> None:
    """Evict the least recently used chunks and indexes until the dir is within
    ``max_size`` (90 % of it, as a mount evicts)."""
    cache = ChunkCache(CacheLayout(cache_dir), max_size)
    if cache.usage() > max_size:
        cache.evict()


def toc_disagreements(cache_dir: Path) -> dict[str, str]:
    """Layer digest → how its TOC disagrees with its tar, for every layer whose TOC index
    and whole-blob index are both in the cache (see ``layers.toc_check``)."""
    chunks = ChunkCache(CacheLayout(cache_dir), 1 << 62)
    found = {}
    for toc_index in sorted(CacheLayout(cache_dir).indexes.glob("sha*.toc-*.sqlite")):
        whole = toc_index.with_name(toc_index.name.split(".")[0] + ".sqlite")
        if whole.exists():
            verdict = check_cached_toc(toc_index, whole, chunks, CacheLayout(cache_dir))
            if verdict is not None:
                found[toc_index.name.split(".")[0].replace("-", ":", 1)] = verdict
    return found


def verify(cache_dir: Path) -> tuple[int, int, list[str]]:
    """Re-hash every stored chunk and check every layer index's seal; remove the chunks
    whose bytes do not match their name and the indexes that cannot serve (a mount builds
    them again). (chunks checked, indexes checked, names removed)."""
    checked = indexes = 0
    removed = []
    for bucket in sorted(CacheLayout(cache_dir).chunks.glob("??")):
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
    for path in _index_files(cache_dir, None):
        if not path.exists():
            continue  # evicted meanwhile by a mount
        indexes += 1
        found = opened(path, None)  # deletes one that cannot serve, with a log line
        if found is not None:
            found.connection.close()
        elif not path.exists():
            removed.append(path.name)
    return checked, indexes, removed


def run(args: argparse.Namespace) -> int:
    """``regfs cache stats | prune | verify | pin | unpin``."""
    directory: Path = args.cache_dir
    if not directory.is_dir():
        print(f"regfs: {directory}: no cache dir there", file=sys.stderr)
        return 1
    if not common.cache_dir_ready(args, writing=args.cache_command != "stats"):
        return 1
    if args.cache_command in ("pin", "unpin"):
        return pin.pin(args) if args.cache_command == "pin" else pin.unpin(args)
    image: dict[str, int] | None = None
    if getattr(args, "image", None):
        try:
            image = _image_layers(args)
        except (MalformedContent, ValueError, RegfsError) as error:
            print(f"regfs: {error}", file=sys.stderr)
            return 1
    if args.cache_command == "prune":
        if args.max_size is None and image is None:
            print("regfs: cache prune needs --max-size or --image", file=sys.stderr)
            return 2
        result, text, code = _prune(directory, args.max_size, image)
    elif args.cache_command == "verify":
        result, text, code = _verify(directory)
    else:
        result = cache_stats(directory, image)
        text, code = format_cache_stats(result), 0
    print(json.dumps(result, indent=1) if args.json else text, end="\n" if args.json else "")
    return code


Report = tuple[dict[str, object], str, int]
"""What a subcommand found: as JSON, as text, and the exit code."""


def _prune(directory: Path, max_size: int | None, image: dict[str, int] | None) -> Report:
    """Forget ``image``'s layers, if given, then evict down to ``max_size``, if given."""
    before = sum(sizes(directory).values())
    freed, kept = forget(directory, list(image)) if image is not None else (0, 0)
    if max_size is not None:
        prune(directory, max_size)
    after = sum(sizes(directory).values())
    result: dict[str, object] = {"before": before, "after": after, "image_bytes_freed": freed,
                                 "image_bytes_pinned": kept}  # fmt: skip
    text = f"{human_size(before)} before, {human_size(after)} after\n"
    if kept:
        text += f"{human_size(kept)} of the image kept: pinned (regfs cache unpin releases it)\n"
    return result, text, 0


def _verify(directory: Path) -> Report:
    """Re-hash the chunks, check the indexes' seals and compare TOCs with tars; exit code
    1 if anything was wrong."""
    checked, indexes, removed = verify(directory)
    disagreeing = toc_disagreements(directory)
    result = {"checked": checked, "indexes_checked": indexes, "removed": removed,
              "toc_disagreements": disagreeing}  # fmt: skip
    text = f"{checked} chunks and {indexes} indexes checked, {len(removed)} damaged removed\n"
    text += "".join(f"  removed {name}\n" for name in removed)
    text += "".join(f"  {digest}: its TOC disagrees with its tar, which is shown: "
                    f"{verdict}\n" for digest, verdict in disagreeing.items())  # fmt: skip
    return result, text, 1 if removed or disagreeing else 0


def _image_layers(args: argparse.Namespace) -> dict[str, int]:
    """The layers of ``args.image`` (of ``--platform``), digest to size, asked of its
    registry."""
    host, repository, reference = parse_image_reference(args.image)
    config, credentials = common.command_setup(args, logging.ERROR)

    async def layers(client: RegistryClient) -> dict[str, int]:
        image, _ = await resolve_image(client, host, repository, reference, args.platform)
        return {str(layer.digest): layer.size or 0 for layer in image.layers}

    return common.with_client(config, credentials, layers)


def cache_stats(directory: Path, image: dict[str, int] | None = None) -> dict[str, object]:
    """What ``regfs cache stats`` shows; with ``image`` (its layers' digests and sizes),
    the share of the image cached as one figure too."""
    cached = layers(directory, list(image) if image is not None else None)
    stats: dict[str, object] = {
        "dir": str(directory),
        "sizes": sizes(directory),
        "layers": [dataclasses.asdict(layer) for layer in cached],
        **pin.stats(directory),
        "mounts": [
            {"mountpoint": state["mountpoint"], "chunk_reads": state["cache"]["chunk_reads"]}  # type: ignore[index]
            for state in mounts_using(directory)
        ],
    }
    if image is not None:
        best = {layer.digest: layer.cached for layer in sorted(cached, key=lambda c: c.cached)}
        total = sum(image.values())
        share = sum(size * best.get(digest, 0.0) for digest, size in image.items())
        stats["image"] = {"layers": len(image), "cached": share / total if total else 1.0}
    return stats
