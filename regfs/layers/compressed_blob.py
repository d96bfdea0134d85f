"""A layer's compressed blob as it is stored in the registry, read lazily and verified.

Layers layer. A layer store's ``blob`` file is read whole by ``podman save`` and ``push``,
never by a pull or a run, so nothing is fetched until it is read. The first read streams
the blob once: it is cut into ``PIECE_SIZE`` pieces, each kept in the chunk cache under
its sha256, and the whole is checked against the layer digest. Only then is the list of
the pieces' hashes published (``CacheLayout.blob_pieces``: 32 bytes per piece, tmp →
rename), and every read is served from pieces checked against it: pieces evicted since
are fetched again like any others (``pieces.py``), adjacent ones with one Range request,
on the mount's streams as what a reader waits for (``streams.py``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import trio

from regfs.cache.flight import SingleFlight
from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically
from regfs.domain.errors import VerificationFailed
from regfs.domain.verify import verified_stream
from regfs.layers.layer_ref import LayerRef
from regfs.layers.piece_claims import Deliver, Made, Piece
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.reader_base import ReadContext, fetch_in_runs, joined
from regfs.layers.streams import Priority
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
        self.hashes.append(await self._pieces.keep_named(piece))

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

    def __init__(self, client: RegistryClient, layout: CacheLayout, context: ReadContext) -> None:
        """``context``: the mount's pieces, Range requests and streams."""
        self._client = client
        self._layout = layout
        self._context = context
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
            sink = _PieceSink(layer, self._context.pieces)
            await self._client.download_blob(
                layer.host, layer.repository, layer.digest, sink, urls=layer.descriptor.urls
            )
            hashes = await sink.finish()
            await trio.to_thread.run_sync(write_atomically, path, hashes)
            return hashes

        return await self._flight.run(str(path), load)

    async def read(self, layer: LayerRef, offset: int, size: int) -> bytes:
        """``size`` bytes of the blob at ``offset``, each piece checked against its hash."""
        blob_size = layer.descriptor.size or 0
        end = min(offset + size, blob_size)
        if offset >= end:
            return b""
        hashes = await self._hashes(layer)
        pieces = []
        for number in range(offset // PIECE_SIZE, (end - 1) // PIECE_SIZE + 1):
            start = number * PIECE_SIZE
            stop = min(start + PIECE_SIZE, blob_size)
            sha256 = hashes[number * HASH_SIZE : (number + 1) * HASH_SIZE]
            pieces.append(Piece(sha256, start, stop - start, None,
                                f"{layer}: blob bytes [{start}, {stop})"))  # fmt: skip
        fetch = functools.partial(self._fetch, layer)
        return joined(pieces, await self._context.pieces.get(pieces, fetch), offset, end)

    async def _fetch(
        self, layer: LayerRef, missing: Sequence[Piece[None]], deliver: Deliver[None]
    ) -> None:
        """Pieces evicted since the verified pass: adjacent ones with one Range request."""
        await fetch_in_runs(
            missing, _extent, _cut, deliver,
            ranges=functools.partial(self._context.ranges, layer),
            streams=self._context.streams, priority=Priority.WAITED, name="blob piece",
        )  # fmt: skip


def _extent(piece: Piece[None]) -> tuple[int, int]:
    return piece.start, piece.end


async def _cut(fetched: bytes, run: Sequence[Piece[None]]) -> Made[None]:
    """Each piece of a run from the run's bytes (the blob's own: nothing to decompress)."""
    base = run[0].start
    return [(piece, fetched[piece.start - base : piece.end - base]) for piece in run]
