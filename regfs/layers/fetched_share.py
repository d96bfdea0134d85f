"""How much of a layer the cache holds, as bytes of its blob (``user.regfs.fetched``,
``regfs prefetch``'s report).

Layers layer. Never fetches: an index the mount has not resolved yet is looked for in
the cache dir only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import ExpectedIndex
from regfs.layers.pieces import VerifiedPieces


async def fetched_bytes(
    size: int,
    index: LayerIndex | None,
    candidates: Sequence[tuple[Path, ExpectedIndex] | None],
    pieces: VerifiedPieces,
) -> int:
    """Bytes of a layer of ``size`` (compressed, as they cross the network) whose content
    is in the cache now: its size times the share of its pieces cached; 0 before it is
    indexed. ``index``: the one the mount reads it through, if resolved; else the first
    of ``candidates`` (index files, and what they must be) found in the cache."""
    opened = None
    for candidate in candidates if index is None else ():
        if candidate is not None and candidate[0].exists():
            index = opened = LayerIndex.open(candidate[0], expected=candidate[1])
            break
    if index is None:
        return 0
    try:
        listed = await index.pieces()
    finally:
        if opened is not None:
            opened.close()
    total = sum(piece_size for _, piece_size in listed)

    def cached() -> int:
        return sum(piece_size for sha256, piece_size in listed if pieces.cached(sha256))

    present = await trio.to_thread.run_sync(cached)
    return round(size * present / total) if total else size
