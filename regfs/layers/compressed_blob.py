"""A layer's compressed blob as it is stored in the registry, read lazily and verified.

Layers layer. A layer store's ``blob`` file is read whole by ``podman save`` and ``push``,
never by a pull or a run, so nothing is fetched until it is read. The first read streams
the blob once: it is cut into ``PIECE_SIZE`` pieces, each kept in the chunk cache under
its sha256, and the whole is checked against the layer digest. Only then is the list of
the pieces' hashes published (``CacheLayout.blob_pieces``: 32 bytes per piece, tmp →
rename), and every read is served from pieces checked against it: a piece evicted since
is fetched again by a Range request and checked like any other (``pieces.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

from regfs.cache.flight import SingleFlight
from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically
from regfs.domain.errors import VerificationFailed
from regfs.domain.verify import verified_stream
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.readers import RangeFetch
from regfs.registry.client import RegistryClient

PIECE_SIZE = 1 << 20
HASH_SIZE = 32


class _PieceSink:
    """Receives the blob: hashes it whole and keeps each piece under its own sha256."""

    def __init__(self, layer: LayerRef, pieces: VerifiedPieces) -> None:
        self._layer = layer
        self._pieces = pieces
        self._hasher = hashlib.new(layer.digest.algorithm)
        self._pending = bytearray()
        self._received = 0
        self.hashes: list[bytes] = []

    async def restart(self) -> None:
        """A mirror failed midway: the next one sends the blob from its start."""
        self._hasher = hashlib.new(self._layer.digest.algorithm)
        self._pending.clear()
        self._received = 0
        self.hashes.clear()

    async def write(self, data: bytes) -> None:
        self._received += len(data)
        size = self._layer.descriptor.size
        if size is not None and self._received > size:
            raise VerificationFailed(f"{self._layer}: layer blob longer than {size} bytes")
        self._hasher.update(data)
        self._pending += data
        while len(self._pending) >= PIECE_SIZE:
            await self._keep(bytes(self._pending[:PIECE_SIZE]))
            del self._pending[:PIECE_SIZE]

    async def _keep(self, piece: bytes) -> None:
        sha256 = await trio.to_thread.run_sync(lambda: hashlib.sha256(piece).digest())
        await self._pieces.keep_if_intact(sha256, piece)
        self.hashes.append(sha256)

    async def finish(self) -> bytes:
        """The pieces' hashes, once the whole blob is checked against its digest."""
        if self._pending:
            await self._keep(bytes(self._pending))
        layer = self._layer
        verified_stream(self._hasher.hexdigest(), self._received, layer.digest,
                        size=layer.descriptor.size, what=f"{layer}: layer blob")  # fmt: skip
        return b"".join(self.hashes)


class CompressedBlobs:
    """Verified reads of layer blobs' own bytes, for a layer store's ``blob`` files."""

    def __init__(
        self,
        client: RegistryClient,
        pieces: VerifiedPieces,
        layout: CacheLayout,
        ranges: Callable[[LayerRef], RangeFetch],
    ) -> None:
        self._client = client
        self._pieces = pieces
        self._layout = layout
        self._ranges = ranges
        self._flight: SingleFlight[bytes] = SingleFlight()

    async def _hashes(self, layer: LayerRef) -> bytes:
        """The pieces' hashes: from the cache dir, or from a verified pass over the blob."""
        path = self._layout.blob_pieces(layer.digest.dir_name)

        async def load() -> bytes:
            try:
                hashes = await trio.to_thread.run_sync(path.read_bytes)
            except FileNotFoundError:
                hashes = b""
            expected = -(-(layer.descriptor.size or 0) // PIECE_SIZE) * HASH_SIZE
            if hashes and len(hashes) == expected:
                return hashes
            sink = _PieceSink(layer, self._pieces)
            await self._client.download_blob(
                layer.host, layer.repository, layer.digest, sink, urls=layer.descriptor.urls
            )
            hashes = await sink.finish()
            await trio.to_thread.run_sync(write_atomically, path, hashes)
            return hashes

        return await self._flight.run(str(path), load)

    async def read(self, layer: LayerRef, offset: int, size: int) -> bytes:
        """``size`` bytes of the blob at ``offset``, each piece checked against its hash."""
        end = min(offset + size, layer.descriptor.size or 0)
        if offset >= end:
            return b""
        hashes = await self._hashes(layer)
        fetch_range = self._ranges(layer)
        parts = []
        for number in range(offset // PIECE_SIZE, (end - 1) // PIECE_SIZE + 1):
            start = number * PIECE_SIZE
            stop = min(start + PIECE_SIZE, layer.descriptor.size or 0)
            sha256 = hashes[number * HASH_SIZE : (number + 1) * HASH_SIZE]
            what = f"{layer}: blob bytes [{start}, {stop})"

            async def fetch(start: int = start, stop: int = stop, what: str = what) -> bytes:
                return await fetch_range(start, stop, what)

            piece = await self._pieces.get(sha256, fetch, what)
            parts.append(piece[max(offset - start, 0) : end - start])
        return b"".join(parts)
