"""Checking a lazy layer's TOC against its tar, once the whole blob is at hand.

Layers layer. ``regfs prefetch`` downloads an eStargz or zstd:chunked layer whole (it
wants every byte anyway): its blob is checked against the layer digest and indexed, and
then the TOC's index is compared with the tar's (``agreement.py``), every TOC chunk's
digest with the tar bytes it stands for. Where they differ, the tar wins: the store
records the verdict and reads the layer through its whole-blob index from then on.
"""

from __future__ import annotations

import hashlib

import trio

from regfs.layers.agreement import (
    LayerTree,
    content_checks,
    metadata_differences,
    verdict,
)
from regfs.layers.blobs import LayerStore
from regfs.layers.layer_ref import LayerRef


async def check_toc(store: LayerStore, layer: LayerRef) -> str | None:
    """How the layer's TOC disagrees with its tar (the first differences), or None if it
    agrees or the layer has no TOC that can be used. Downloads the whole blob if the cache
    has no index of it."""
    toc = await store.toc_index(layer)
    if toc is None:
        return None
    whole = await store.whole_index(layer)
    toc_entries, tar_entries = await toc.all_entries(), await whole.all_entries()
    chunks = await toc.all_toc_chunks()

    def compare() -> tuple[list[str], list[tuple[str, int, int, bytes]]]:
        toc_tree, tar_tree = LayerTree.of(toc_entries), LayerTree.of(tar_entries)
        checks = content_checks(toc_tree, chunks, tar_tree)
        return metadata_differences(toc_tree, tar_tree), [
            ("/" + check.path.decode("utf-8", "replace"), check.offset, check.size, check.sha256)
            for check in checks
        ]

    differences, checks = await trio.to_thread.run_sync(compare)
    for path, offset, size, sha256 in checks:
        data = await store.read(layer, whole, offset, size)
        if hashlib.sha256(data).digest() != sha256:
            differences.append(f"{path}: content at tar offset {offset} is not the TOC's")
    if not differences:
        return None
    found = verdict(differences)
    store.record_disagreement(layer, whole, found)
    return found
