"""Checking a lazy layer's TOC against its tar, where both are at hand.

Layers layer. ``regfs prefetch`` downloads an eStargz or zstd:chunked layer whole (it
wants every byte anyway): its blob is checked against the layer digest and indexed, and
then the TOC's index is compared with the tar's (``agreement.py``), every TOC chunk's
digest with the tar bytes it stands for. Where they differ, the tar wins: the store
records the verdict and reads the layer through its whole-blob index from then on.
``regfs cache verify`` makes the same comparison offline for every layer whose two
indexes are in the cache, checking the contents the cache holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from regfs.cache.chunks import ChunkCache, load_verified
from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically
from regfs.layers.formats.agreement import compare, content_difference, verdict
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.layers.layer_store import LayerStore


async def check_toc(store: LayerStore, layer: LayerRef) -> str | None:
    """How the layer's TOC disagrees with its tar (the first differences), or None if it
    agrees or the layer has no TOC that can be used. Downloads the whole blob if the cache
    has no index of it."""
    toc = await store.toc_index(layer)
    if toc is None:
        return None
    whole = await store.whole_index(layer)
    toc_entries, chunks = await toc.all_entries(), await toc.all_toc_chunks()
    tar_entries = await whole.all_entries()
    differences, checks = await trio.to_thread.run_sync(compare, toc_entries, chunks, tar_entries)
    for check in checks:
        data = await store.read(layer, whole, check.offset, check.size)
        if hashlib.sha256(data).digest() != check.sha256:
            differences.append(content_difference(check))
    if not differences:
        return None
    found = verdict(differences)
    store.record_disagreement(layer, whole, found)
    return found


def check_cached_toc(
    toc_path: Path, whole_path: Path, chunks: ChunkCache, layout: CacheLayout
) -> str | None:
    """The verdict on one layer's TOC index against its whole-blob index, both in the
    cache dir (contents compared where the cache holds the tar's chunks), recorded beside
    the TOC index; None if they agree or either cannot be opened."""
    toc, whole = LayerIndex.open(toc_path), LayerIndex.open(whole_path)
    try:
        if toc is None or whole is None or toc.meta.digest != whole.meta.digest:
            return None
        differences, checks = compare(toc.entries_in(), toc.toc_chunks_in(), whole.entries_in())
        for check in checks:
            data = _cached_bytes(whole, chunks, check.offset, check.size)
            if data is not None and hashlib.sha256(data).digest() != check.sha256:
                differences.append(content_difference(check))
    finally:
        for index in (toc, whole):
            if index is not None:
                index.close()
    if not differences:
        return None
    found = verdict(differences)
    write_atomically(layout.verdict_for(toc_path), found.encode())
    return found


def _cached_bytes(whole: LayerIndex, chunks: ChunkCache, offset: int, size: int) -> bytes | None:
    """``size`` bytes of the tar at ``offset`` from the chunks in the cache, each checked
    against its recorded hash; None if one is missing or damaged."""
    chunk_size = whole.meta.chunk_size
    parts = []
    for number in range(offset // chunk_size, (offset + size - 1) // chunk_size + 1):
        data = load_verified(chunks, whole.chunk_hash(number))
        if data is None:
            return None
        parts.append(data)
    start = offset - (offset // chunk_size) * chunk_size
    return b"".join(parts)[start : start + size]
