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

The bytes are not checked here: the prefetch takes them (``reader_base.fetch_in_runs``)
as it would a Range answer, and the readers check each chunk against the TOC
(``pieces.py``), in the order they arrive, so the chunks a start reads first are there as
soon as they crossed the link. Each range is handed out once and then let go: asked again
(a retry of a damaged chunk), it comes from the registry. Whoever asks for bytes the stream
will not bring, failed to bring, or brings too slowly fetches them itself, as any other
fetch (on the mount's streams). One layer is streamed at a time; while one is, the next
layers' prefetches are fetched as before.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Awaitable, Callable
from heapq import heappop, heappush

import trio

from regfs.domain.errors import RegfsError
from regfs.layers.background import BackgroundWork
from regfs.layers.formats.estargz_head import LOOKED_AT, marks_files
from regfs.layers.layer_ref import LayerRef
from regfs.registry.bodies import Consumer
from regfs.registry.request_deadline import SharedProgress, leading, waiting_on
from regfs.registry.retry_policy import MIN_PROGRESS, Progress

log = logging.getLogger(__name__)

AHEAD_OF_TOC = 4 << 20
"""Bytes a stream brings before the TOC says how many are wanted."""
PAUSED_AT_MOST = 30.0
"""Seconds a stream waits, paused, for its TOC to say how far to go: a build that ended
without saying so leaves no stream (nor its bytes) behind longer."""
MOST = 32 << 20
"""Bytes one stream brings at most: a larger prefetch region is fetched beyond this by
Range requests, as any other."""
STALLED_AFTER = 2.0
"""Seconds without a new piece after which one waiting for the stream fetches itself."""
SLOW_WINDOW = 5.0
"""Once told how far to go, a stream bringing less than its share of the region (or
``MIN_PROGRESS`` bytes) in this many seconds ends (its waiters fetch for themselves)."""
STREAMED_WITHIN = 20.0
"""Seconds a stream may take to bring what the TOC wants: it ends if a window brings less
than that pace. Slower, the readers of the region's files do better with Range requests of
their own (a read waiting for a stream of 21 KB/s to reach its file, 3 MB in, took 147 s
and failed its request's deadline; by a Range request of its own, 1.3 s)."""

Stream = Callable[[LayerRef, tuple[int, int], Consumer], Awaitable[None]]
"""``stream(layer, (start, end), consume)``: the blob's bytes fed to ``consume`` as they
come, until it returns False (``RegistryClient.stream_blob_range``)."""


class EarlyBytes:
    """The first bytes of one blob, as far as they have come and not been taken."""

    def __init__(self, size: int) -> None:
        self._data = bytearray()
        """The bytes from ``_base`` on that arrived (those before were all taken, or are
        before the first wanted)."""
        self._base = 0
        self._fed = 0
        """Bytes of the blob's start that arrived, kept or let go."""
        self._taken: list[tuple[int, int]] = []
        """Ranges handed out beyond ``_base``, sorted, apart."""
        self.received = 0
        """Bytes the stream brought (kept or not)."""
        self._size = min(size, MOST)
        self._wanted = min(self._size, AHEAD_OF_TOC)
        self._told = False
        self._ended = False
        self._marks: bool | None = None
        """Whether the blob begins with marked files, once its first entry tells."""
        self._looked_at = 0
        """Bytes of the head ``marks_files`` last looked through, undecided."""
        self._progress: Progress | None = None
        self._changed = trio.Event()
        self._waiting: list[tuple[int, int, trio.Event]] = []
        """A heap of those waiting for the bytes up to an end, woken once they are all here
        (each piece woke every waiter: with 4 000 waiting, 24 s of CPU for 32 MiB)."""
        self._serial = itertools.count()
        self._last_piece = trio.current_time()
        """When the last piece came (or the stream was told how far to go)."""
        self._flowing = SharedProgress()
        """The stream's progress (its pieces, once told how far to go), shared by those
        waiting for its bytes."""

    @property
    def told(self) -> bool:
        return self._told

    @property
    def covered(self) -> int:
        """Bytes from the blob's start a fetch may take from this stream: those it will
        bring, once told, while it flows; those it brought, once it ended."""
        if self._ended:
            return self._fed
        return self._wanted if self._told else 0

    @property
    def busy(self) -> bool:
        """Whether it still streams, or holds bytes not taken yet: it takes the mount's
        stream slot until then (not until its prefetch ends, which may go on by Range)."""
        return not self._ended or bool(self._data)

    @property
    def held(self) -> int:
        """Bytes kept in memory: arrived and neither handed out nor let go."""
        return len(self._data)

    def want(self, end: int, start: int = 0) -> None:
        """The TOC says bytes ``[start, end)`` are wanted: go on to ``end`` (or to
        ``MOST``), and let go of the bytes before ``start`` (the first entry's tar header
        lies in a gzip member of its own before the first chunk: no one takes it)."""
        self._told = True
        self._wanted = min(max(end, 0), self._size)
        if 0 < start <= self._wanted:
            self._note_taken(0, start)
        needed = (self._wanted - self._fed) * SLOW_WINDOW / STREAMED_WITHIN
        self._last_piece = trio.current_time()
        self._progress = Progress(
            SLOW_WINDOW, "the stream of a blob's start", max(MIN_PROGRESS, round(needed))
        )
        self._wake()

    def stop(self) -> None:
        """Nothing more is wanted: let the bytes go; the stream ends with its next piece
        (or at once, if paused), closing its request."""
        self._told = self._ended = True
        self._wanted = 0
        self._base, self._fed, self._data, self._taken = 0, 0, bytearray(), []
        self._wake()

    async def run(self, stream: Callable[[tuple[int, int], Consumer], Awaitable[None]]) -> None:
        """Feed the stream from the blob's start; a failure ends it (those waiting fetch
        what it did not bring)."""
        try:
            with leading(self._flowing):
                await stream((0, self._size), self._consume)
        finally:
            self._ended = True
            self._wake()

    async def take(self, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` once the stream has brought them, handed out once; None if
        it will not bring them, has handed them out, or brings nothing for
        ``STALLED_AFTER`` seconds. While it flows, its pieces are the waiter's progress
        (``_flowing``): on a slow link a file far into the region comes after more than a
        read's ``--timeout``."""
        while self._fed < end and not self._ended and end <= self._wanted:
            arrived = trio.Event()
            heappush(self._waiting, (end, next(self._serial), arrived))
            with trio.move_on_at(self._last_piece + STALLED_AFTER), waiting_on(self._flowing):
                await arrived.wait()
            if trio.current_time() >= self._last_piece + STALLED_AFTER:
                return None
        if self._fed < end or start < self._base or self._overlaps_taken(start, end):
            return None
        piece = bytes(self._data[start - self._base : end - self._base])
        self._note_taken(start, end)
        return piece

    def _overlaps_taken(self, start: int, end: int) -> bool:
        """Whether a range handed out overlaps ``[start, end)``: only the last of those
        starting before ``end`` may (they are sorted and apart), found by bisection (a
        prefetch takes thousands of chunks)."""
        before = bisect.bisect_left(self._taken, (end,))
        return before > 0 and self._taken[before - 1][1] > start

    def _note_taken(self, start: int, end: int) -> None:
        """Record ``[start, end)`` as handed out; let go of the bytes before the first
        range not handed out yet."""
        kept_from = min(self._base, self._fed)
        bisect.insort(self._taken, (start, end))
        while self._taken and self._taken[0][0] <= self._base:
            self._base = max(self._base, self._taken.pop(0)[1])
        del self._data[: min(self._base, self._fed) - kept_from]

    async def _consume(self, data: bytes) -> bool:
        self.received += len(data)
        if self._ended:
            return False
        before = self._fed
        data = data[: self._size - before]
        self._fed += len(data)
        self._data += data[max(self._base - before, 0) :]  # nothing before ``_base``
        if self._progress is not None:  # after the piece is kept: a stream carried on from
            self._progress.add(len(data))  # another place goes on from ``_fed``
        if self._marks is None and self._base == 0 and self._head_grew(before):
            self._marks = marks_files(bytes(self._data[:LOOKED_AT]))
        if self._marks is False and not self._told:
            self.stop()  # nothing marked: the TOC will not want any of it
            return False
        self._last_piece = trio.current_time()
        while self._waiting and self._waiting[0][0] <= self._fed:
            heappop(self._waiting)[2].set()  # only those whose bytes are all here
        if self._fed >= self._size:
            return False
        with trio.move_on_after(PAUSED_AT_MOST) as paused:
            while self._fed >= self._wanted and not self._told:
                await self._changed.wait()  # paused: the TOC says how far to go
        return not paused.cancelled_caught and self._fed < self._wanted

    def _head_grew(self, before: int) -> bool:
        """Whether the head is worth looking through again: it doubled since the last
        look, or reached ``LOOKED_AT`` (a registry sending 20 bytes a piece had the whole
        head inflated again with each: 5.5 s of CPU)."""
        if before >= LOOKED_AT or self._fed < min(2 * self._looked_at, LOOKED_AT):
            return False
        self._looked_at = self._fed
        return True

    def _wake(self) -> None:
        """Something changed besides bytes arriving: every waiter looks again."""
        self._changed.set()
        self._changed = trio.Event()
        for _, _, waiting in self._waiting:
            waiting.set()
        self._waiting.clear()


STREAMED_AT_ONCE = 1
"""Layers streamed at once, for the whole mount: the others' prefetches are fetched as
before (a stream paused behind another layer's indexing holds no stream slot of
``streams.py``, but a connection)."""


class EarlyStreams:
    """The early bytes of the layers of one mount whose TOC is being read."""

    def __init__(self, background: BackgroundWork, stream: Stream) -> None:
        self._background = background
        self._stream = stream
        self._early: dict[LayerRef, EarlyBytes] = {}

    def begin(self, layer: LayerRef, size: int) -> None:
        """Stream the blob of ``layer`` (``size`` bytes) from its start, as the mount's own
        work, unless it is being streamed, another layer is (or holds bytes of its stream
        not taken yet), or no background work runs here."""
        streaming = [early for early in self._early.values() if early.busy]
        if len(streaming) >= STREAMED_AT_ONCE or not self._background.running:
            return
        early = self._early[layer] = EarlyBytes(size)
        if not self._background.start("early bytes", layer, lambda: self._run(layer, early)):
            del self._early[layer]

    def told(self, layer: LayerRef) -> bool:
        """True unless ``layer`` is being streamed with nothing told yet."""
        early = self._early.get(layer)
        return early is None or early.told

    def want(self, layer: LayerRef, end: int, start: int = 0) -> None:
        if (early := self._early.get(layer)) is not None:
            early.want(end, start)

    def end(self, layer: LayerRef) -> None:
        """Stop streaming ``layer`` (its prefetch has what it wanted, or it has none)."""
        if (early := self._early.pop(layer, None)) is not None:
            early.stop()

    def of(self, layer: LayerRef) -> EarlyBytes | None:
        """The stream of ``layer``'s start, if there is one."""
        return self._early.get(layer)

    async def _run(self, layer: LayerRef, early: EarlyBytes) -> None:
        try:
            await early.run(lambda span, consume: self._stream(layer, span, consume))
        except RegfsError as error:
            log.debug("%s: the stream of its start ended: %s", layer, error)
        log.debug("%s: %d bytes of its start streamed", layer, early.received)
