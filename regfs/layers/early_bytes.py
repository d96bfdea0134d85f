"""An eStargz blob's first bytes, streamed while its TOC is fetched and read.

Layers layer. An eStargz builder puts the files a container reads first at the start of
the blob, before ``.prefetch.landmark``, and regfs fetches them (``LayerReads``'s
prefetch). How far that region goes is written only in the TOC, at the blob's end: the
footer, then the TOC, then reading and laying it out take a few round trips and a tenth of
a second, and the link was idle meanwhile. So when a layer's TOC is asked for, a stream of
the blob from its start is asked for too. Until the TOC says how much is wanted it brings
at most ``AHEAD_OF_TOC`` bytes; then it goes on to the region's end and stops, or stops at
once. A blob whose first entry says its builder marked nothing (``estargz_head.py``) is not
streamed further: only a layer with no landmark at all costs bytes for nothing.

The bytes are not checked here: they are handed, as Range fetches of the blob, to the
readers that check each chunk against the TOC (``pieces.py``), in the order they arrive,
so the chunks a start reads first are there as soon as they crossed the link. Whoever asks
for bytes the stream will not bring, or that it failed to bring, fetches them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from regfs.domain.errors import RegfsError
from regfs.layers.background import BackgroundWork
from regfs.layers.formats.estargz_head import LOOKED_AT, marks_files
from regfs.layers.layer_ref import LayerRef
from regfs.layers.streams import Priority, Streams

log = logging.getLogger(__name__)

AHEAD_OF_TOC = 4 << 20
"""Bytes a stream brings before the TOC says how many are wanted."""
PAUSED_AT_MOST = 30.0
"""Seconds a stream waits, paused, for its TOC to say how far to go: a build that ended
without saying so leaves no stream (nor its bytes) behind longer."""
MOST = 64 << 20
"""Bytes one stream brings at most (held in memory until the prefetch has them): a larger
prefetch region is fetched beyond this by Range requests, as any other."""

Consume = Callable[[bytes], Awaitable[bool]]
Stream = Callable[[LayerRef, tuple[int, int], Consume], Awaitable[None]]
"""``stream(layer, (start, end), consume)``: the blob's bytes fed to ``consume`` as they
come, until it returns False (``RegistryClient.stream_blob_range``)."""


class EarlyBytes:
    """The first bytes of one blob, as far as they have come."""

    def __init__(self, size: int) -> None:
        self._data = bytearray()
        self.received = 0
        """Bytes the stream brought (kept or not)."""
        self._size = min(size, MOST)
        self._wanted = min(size, AHEAD_OF_TOC)
        self._told = False
        self._ended = False
        self._marks: bool | None = None
        """Whether the blob begins with marked files, once its first entry tells."""
        self._changed = trio.Event()

    @property
    def covered(self) -> int:
        """Bytes from the blob's start this stream brings (0 until told): a fetch within
        them waits for the stream instead of asking the registry."""
        return self._wanted if self._told and not self._ended else len(self._data)

    def want(self, end: int) -> None:
        """The TOC says bytes ``[0, end)`` are wanted: go on to there (or to ``MOST``)."""
        self._told = True
        self._wanted = min(max(end, 0), self._size)
        self._wake()

    def stop(self) -> None:
        """Nothing more is wanted: let the bytes go; the stream ends with its next piece
        (or at once, if paused), closing its request."""
        self._told = self._ended = True
        self._wanted = 0
        self._data = bytearray()
        self._wake()

    async def run(self, stream: Callable[[tuple[int, int], Consume], Awaitable[None]]) -> None:
        """Feed the stream from the blob's start; a failure ends it (those waiting fetch
        what it did not bring)."""
        try:
            await stream((0, self._size), self._consume)
        finally:
            self._ended = True
            self._wake()

    async def slice(self, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` once the stream has brought them; None if it will not."""
        while len(self._data) < end and not self._ended and end <= self._wanted:
            await self._changed.wait()
        return bytes(self._data[start:end]) if len(self._data) >= end else None

    async def _consume(self, data: bytes) -> bool:
        self.received += len(data)
        if self._ended:
            return False
        self._data += data[: self._size - len(self._data)]
        if self._marks is None and len(self._data) - len(data) < LOOKED_AT:
            self._marks = marks_files(bytes(self._data[:LOOKED_AT]))
        if self._marks is False and not self._told:
            self.stop()  # nothing marked: the TOC will not want any of it
            return False
        self._wake()
        with trio.move_on_after(PAUSED_AT_MOST) as paused:
            while len(self._data) >= self._wanted and not self._told:
                await self._changed.wait()  # paused: the TOC says how far to go
        return not paused.cancelled_caught and len(self._data) < self._wanted

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class EarlyStreams:
    """The early bytes of the layers of one mount whose TOC is being read."""

    def __init__(self, background: BackgroundWork, streams: Streams, stream: Stream) -> None:
        self._background = background
        self._streams = streams
        self._stream = stream
        self._early: dict[LayerRef, EarlyBytes] = {}

    def begin(self, layer: LayerRef, size: int) -> None:
        """Stream the blob of ``layer`` (``size`` bytes) from its start, as the mount's own
        work, unless it is being streamed or no background work runs here."""
        if layer in self._early or not self._background.running:
            return
        early = self._early[layer] = EarlyBytes(size)
        if not self._background.start("early bytes", layer, lambda: self._run(layer, early)):
            del self._early[layer]

    def want(self, layer: LayerRef, end: int) -> None:
        if (early := self._early.get(layer)) is not None:
            early.want(end)

    def end(self, layer: LayerRef) -> None:
        """Stop streaming ``layer`` (its prefetch has what it wanted, or it has none)."""
        if (early := self._early.pop(layer, None)) is not None:
            early.stop()

    def covered(self, layer: LayerRef) -> int:
        early = self._early.get(layer)
        return early.covered if early is not None else 0

    async def slice(self, layer: LayerRef, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of the blob from its stream, if it brings them."""
        early = self._early.get(layer)
        if early is None or end > early.covered:
            return None
        return await early.slice(start, end)

    async def _run(self, layer: LayerRef, early: EarlyBytes) -> None:
        try:
            async with self._streams.slot(Priority.BACKGROUND):
                await early.run(lambda span, consume: self._stream(layer, span, consume))
        except RegfsError as error:
            log.debug("%s: the stream of its start broke off: %s", layer, error)
        log.debug("%s: %d bytes of its start streamed", layer, early.received)
