"""What a pin holds of a layer: its files in ``indexes/`` and the pieces a mount reads.

Layers layer: it reads the layer's index files (the pin records themselves are
``cache/pin_records.py``). A layer may have an index from its whole blob, from a TOC and
from a zTOC, and the list of its compressed blob's pieces (a layer store's ``blob``); a pin
holds all those files (by the layer's digest: ``PinnedLayer.file_prefix``) and the pieces
named by the index a mount reads the layer through and by the blob's list, whether
cached now or fetched later.
"""

from __future__ import annotations

from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import PinnedLayer
from regfs.domain.digest import Digest
from regfs.layers.compressed_blob import HASH_SIZE, PIECE_SIZE
from regfs.layers.index.layer_index import LayerIndex


def pinned_layer(layout: CacheLayout, digest: Digest, compressed_size: int) -> PinnedLayer:
    """The layer as a pin holds it now: its index files and the pieces a mount reads it
    through, with what they take in the cache dir; a layer with no index there is pinned
    by digest only. Blocking.

    Where the index from the whole blob exists, a mount reads the layer through it, so
    only its pieces are held (a TOC's chunks, cached when ``regfs prefetch`` compared the
    TOC with the tar, may be evicted); otherwise those of every index there is (a TOC's
    and a zTOC's: which one a mount uses depends on what it finds)."""
    pieces: dict[bytes, int] = {}
    files = 0
    indexed = False
    blob_pieces = layout.blob_pieces(digest.dir_name)
    whole = layout.indexes / f"{digest.dir_name}.sqlite"
    paths = sorted(layout.indexes.glob(f"{digest.dir_name}.*"))
    for path in paths:
        try:
            size = path.stat().st_size
            if path == blob_pieces:
                pieces.update(_blob_pieces(path.read_bytes(), compressed_size))
            elif path.suffix == ".sqlite" and (path == whole or whole not in paths):
                index = LayerIndex.open(path)
                if index is None:
                    continue
                try:
                    pieces.update(index.stored_pieces_in())
                finally:
                    index.close()
                indexed = True
        except FileNotFoundError:  # evicted meanwhile: not pinned yet, so not there
            continue
        files += size
    names = tuple(sorted(sha256.hex() for sha256 in pieces))
    stored = files + sum(pieces.values()) if indexed else None
    return PinnedLayer(str(digest), compressed_size, stored, names)


def _blob_pieces(hashes: bytes, blob_size: int) -> dict[bytes, int]:
    """sha256 → size of each piece of a compressed blob, from its list of piece hashes."""
    count = len(hashes) // HASH_SIZE
    return {
        hashes[n * HASH_SIZE : (n + 1) * HASH_SIZE]: min(PIECE_SIZE, blob_size - n * PIECE_SIZE)
        for n in range(count)
        if blob_size > n * PIECE_SIZE
    }
