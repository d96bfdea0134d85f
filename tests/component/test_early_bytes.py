"""An eStargz blob's start streamed while its TOC is fetched (``layers/early_bytes.py``):
the stream alone, then through a layer store whose prefetch it carries."""

from __future__ import annotations

import gzip
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from regfs.domain.digest import Digest
from regfs.domain.errors import Unavailable
from regfs.domain.manifest import Descriptor
from regfs.layers import early_bytes
from regfs.layers.background import BackgroundWork
from regfs.layers.early_bytes import (
    AHEAD_OF_TOC,
    PAUSED_AT_MOST,
    SLOW_WINDOW,
    STALLED_AFTER,
    EarlyBytes,
    EarlyStreams,
)
from regfs.layers.formats.estargz_head import LOOKED_AT, marks_files
from regfs.layers.formats.toc import FOOTER_SIZE
from regfs.layers.layer_ref import LayerRef
from regfs.layers.streams import BACKGROUND_STREAMS
from regfs.registry.request_deadline import request_deadline
from tests.component.test_places import client_for, ranged
from tests.support.crafted import gzip_layer, member
from tests.support.estargz_writer import estargz
from tests.support.memory_registry import MemoryRegistry, sha256
from tests.support.store_tree import (
    HOST,
    background_running,
    directory,
    encoded,
    estargz_registry,
    read,
    store,
)

PIECE = 64 << 10


def blob_beginning_with(name: str) -> bytes:
    """An eStargz-like blob whose first entry is ``name``: its gzip member, then bytes."""
    return gzip_layer(member(name, b"v")) + random.Random(1).randbytes(3 * AHEAD_OF_TOC)


BLOB = blob_beginning_with("etc/first")

Consume = Callable[[bytes], Awaitable[bool]]


def blob_stream(
    sent: list[int], *, fail_after: int | None = None, blob: bytes = BLOB
) -> Callable[..., Awaitable[None]]:
    """A stream of ``blob`` in pieces, noting the bytes handed out in ``sent``; it breaks
    off after ``fail_after`` bytes, if given."""

    async def stream(span: tuple[int, int], consume: Consume) -> None:
        for start in range(span[0], span[1], PIECE):
            if fail_after is not None and start >= fail_after:
                raise Unavailable("the body broke off")
            await trio.sleep(0.01)
            piece = blob[start : min(start + PIECE, span[1])]
            sent.append(len(piece))
            if not await consume(piece):
                return

    return stream


async def test_a_stream_pauses_until_told_how_far_then_stops_there(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent: list[int] = []
    early = EarlyBytes(len(BLOB))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(early.run, blob_stream(sent))
        await trio.sleep(PAUSED_AT_MOST / 2)
        assert sum(sent) == AHEAD_OF_TOC  # paused: nothing says how far to go yet
        wanted = AHEAD_OF_TOC + 3 * PIECE + 5
        early.want(wanted)
        assert early.covered == wanted
        assert await early.take(wanted - 10, wanted) == BLOB[wanted - 10 : wanted]
        assert await early.take(wanted - 10, wanted) is None  # handed out once
        assert await early.take(0, 10) == BLOB[:10]
        assert await early.take(0, len(BLOB)) is None  # beyond what it brings
    assert sum(sent) < wanted + PIECE


async def test_a_stream_stopped_frees_its_bytes_and_ends(autojump_clock: trio.abc.Clock) -> None:
    sent: list[int] = []
    early = EarlyBytes(len(BLOB))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(early.run, blob_stream(sent))
        await trio.sleep(0.1)
        early.stop()
    assert sum(sent) < AHEAD_OF_TOC
    assert early.covered == 0
    assert await early.take(0, 10) is None


async def test_a_blob_whose_builder_marked_nothing_is_not_streamed_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Its first entry is ``.no.prefetch.landmark``: the stream ends with its first piece,
    long before the TOC says so."""
    sent: list[int] = []
    blob = blob_beginning_with(".no.prefetch.landmark")
    early = EarlyBytes(len(blob))
    await early.run(blob_stream(sent, blob=blob))
    assert sum(sent) == PIECE
    assert early.covered == 0


async def test_a_stream_never_told_stops_on_its_own(autojump_clock: trio.abc.Clock) -> None:
    """A build that ended without a word (a bug) leaves no paused stream behind."""
    early = EarlyBytes(len(BLOB))
    with trio.fail_after(PAUSED_AT_MOST + 10):
        await early.run(blob_stream([]))
    assert early.covered == AHEAD_OF_TOC


async def test_bytes_a_broken_stream_did_not_bring_are_not_waited_for(
    autojump_clock: trio.abc.Clock,
) -> None:
    early = EarlyBytes(len(BLOB))
    early.want(len(BLOB))
    with pytest.raises(Unavailable):
        await early.run(blob_stream([], fail_after=4 * PIECE))
    assert early.covered == 4 * PIECE
    assert await early.take(0, 4 * PIECE) == BLOB[: 4 * PIECE]
    assert await early.take(0, 4 * PIECE + 1) is None


async def test_a_waiter_gives_up_on_a_stream_that_brings_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    early = EarlyBytes(len(BLOB))
    early.want(len(BLOB))

    async def stalled(span: tuple[int, int], consume: Consume) -> None:
        await consume(BLOB[:100])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early.run, stalled)
        start = trio.current_time()
        assert await early.take(0, PIECE) is None
        assert trio.current_time() - start == pytest.approx(STALLED_AFTER)
        nursery.cancel_scope.cancel()


async def test_a_stream_too_slow_once_told_ends(autojump_clock: trio.abc.Clock) -> None:
    early = EarlyBytes(len(BLOB))
    early.want(len(BLOB))

    async def trickle(span: tuple[int, int], consume: Consume) -> None:
        for start in range(0, span[1], 100):
            await trio.sleep(1)
            if not await consume(BLOB[start : start + 100]):
                return

    with trio.fail_after(3 * SLOW_WINDOW), pytest.raises(Unavailable, match="too slow"):
        await early.run(trickle)
    assert early.covered < 1000


async def test_the_bytes_before_the_first_wanted_are_let_go_and_the_rest_as_taken(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An eStargz blob's first entry has its tar header in a gzip member of its own, before
    the first chunk: no one takes those bytes, and holding them held everything after."""
    first, end = 68, 8 * PIECE
    early = EarlyBytes(len(BLOB))
    early.want(end, first)
    await early.run(blob_stream([]))
    chunks = [(start, min(start + 5000, end)) for start in range(first, end, 5000)]
    random.Random(2).shuffle(chunks)
    for start, stop in chunks:
        assert await early.take(start, stop) == BLOB[start:stop]
    assert early.held == 0
    assert await early.take(0, first) is None


async def test_a_stream_carried_on_from_another_place_keeps_each_byte_where_it_belongs(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A mirror too slow for the stream hands over to the registry, which goes on from
    the bytes fed so far: the piece that found it too slow is kept first."""
    blob = random.Random(7).randbytes(256 << 10)

    class SlowMirrorBody(httpx.AsyncByteStream, AsyncIterator[bytes]):
        """10 000 bytes every 6 s: too slow. An iterator: the stream leaves it early."""

        def __init__(self, data: bytes) -> None:
            self._data = data
            self._sent = 0

        def __aiter__(self) -> AsyncIterator[bytes]:
            return self

        async def __anext__(self) -> bytes:
            if self._sent >= len(self._data):
                raise StopAsyncIteration
            if self._sent:
                await trio.sleep(6)
            self._sent += 10_000
            return self._data[self._sent - 10_000 : self._sent]

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "mirror.example":
            return ranged(request, blob)
        start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        headers = {"Content-Range": f"bytes {start}-{end}/{len(blob)}"}
        return httpx.Response(206, headers=headers, stream=SlowMirrorBody(blob[start : end + 1]))

    client = client_for(handler)
    early = EarlyBytes(len(blob))
    early.want(len(blob))
    await early.run(
        lambda span, consume: client.stream_blob_range(
            "fleet.example", "team/app", Digest.of(blob), span, consume
        )
    )
    assert early.covered == len(blob)
    assert await early.take(0, len(blob)) == blob


StreamAnswer = Callable[[bytes], httpx.Response]


def ranges_seen(
    registry: MemoryRegistry, blob: bytes, stream_answer: StreamAnswer | None = None
) -> list[str]:
    """The Range headers of the blob GETs ``registry`` answers, in order; the stream of
    the blob's start (a Range to its end) is answered by ``stream_answer(blob)``, if given."""
    seen: list[str] = []
    handle = registry.handle

    async def noting(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(sha256(blob)) and request.method == "GET":
            seen.append(request.headers.get("Range", ""))
            if stream_answer is not None and seen[-1] == f"bytes=0-{len(blob) - 1}":
                return stream_answer(blob)
        return await handle(request)

    registry.handle = noting  # type: ignore[method-assign]
    return seen


class _Body(httpx.AsyncByteStream, AsyncIterator[bytes]):
    """A stream's body: ``data`` in 64 KiB pieces, then ``after()`` (a stall, a break).
    An iterator, not a generator: the reader stops it early."""

    def __init__(self, data: bytes, after: Callable[[], Awaitable[None]]) -> None:
        self._data = data
        self._after = after

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._data:
            await self._after()
            raise StopAsyncIteration
        piece, self._data = self._data[:PIECE], self._data[PIECE:]
        return piece


def partial(blob: bytes, data: bytes, after: Callable[[], Awaitable[None]]) -> httpx.Response:
    headers = {"Content-Range": f"bytes 0-{len(blob) - 1}/{len(blob)}"}
    return httpx.Response(206, headers=headers, stream=_Body(data, after))


async def _break() -> None:
    raise httpx.ReadError("connection reset")


class _SlowBody(_Body):
    """32 KiB every 1.5 s: a piece well within ``STALLED_AFTER``, and over ``MIN_PROGRESS``
    a window, but 21 KB/s."""

    async def __anext__(self) -> bytes:
        if not self._data:
            raise StopAsyncIteration
        await trio.sleep(1.5)
        piece, self._data = self._data[: 32 << 10], self._data[32 << 10 :]
        return piece


STREAM_FAULTS: dict[str, StreamAnswer | None] = {
    "none": None,
    "refused": lambda blob: httpx.Response(500),
    "stalled": lambda blob: partial(blob, blob[:100], trio.sleep_forever),
    "broken": lambda blob: partial(blob, blob[: 3 * PIECE], _break),
    "damaged": lambda blob: partial(blob, blob[:5000] + bytes([blob[5000] ^ 0xFF]) + blob[5001:],
                                    trio.sleep_forever),
}  # fmt: skip


def prefetched_image(size: int) -> tuple[bytes, bytes, dict[str, bytes]]:
    """An eStargz layer whose builder marked ``etc/first`` and ``bin/tool`` (``size``
    bytes each) to be read first, with ``usr/rest`` after its landmark."""
    files = {
        "etc/first": random.Random(2).randbytes(size),
        "bin/tool": random.Random(3).randbytes(size),
    }
    blob, toc = estargz([*files.items(), (".prefetch.landmark", b"v"),
                         ("usr/rest", random.Random(4).randbytes(size))], 64 << 10)  # fmt: skip
    return blob, toc, files


@pytest.mark.parametrize("fault", STREAM_FAULTS)
async def test_the_prefetch_region_comes_with_the_stream_of_the_blob_s_start(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    """While its TOC is fetched, an eStargz blob is streamed from its start: the marked
    files come with that one request, none of their own, and read right. A stream that
    is refused, stalls, breaks off or brings a damaged chunk leaves the prefetch to fetch
    what it did not bring right, on the mount's streams, and the files still read right."""
    caplog.set_level(logging.INFO)
    blob, toc, files = prefetched_image(200_000)
    registry = estargz_registry(blob, toc)
    seen = ranges_seen(registry, blob, STREAM_FAULTS[fault])
    root = store(registry, tmp_path, timeout=1e6)  # worker threads run while virtual time does
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        with trio.fail_after(1000):
            while "prefetched the first" not in caplog.text:
                await trio.sleep(0.01)
        fetched = len(seen)
        diff = await directory(layer, "diff")
        for path, data in files.items():
            parent, name = path.split("/")
            assert await read(await directory(diff, parent), name) == data
        assert len(seen) == fetched
    stream = f"bytes=0-{len(blob) - 1}"
    assert stream in seen
    spans = [tuple(map(int, header.removeprefix("bytes=").split("-"))) for header in seen]
    toc_start = min(
        start for start, end in spans if start > 0 and end >= len(blob) - FOOTER_SIZE - 1
    )
    own = [header for header, (start, _) in zip(seen, spans, strict=True)
           if header != stream and start < toc_start]  # fmt: skip
    assert bool(own) is (fault != "none")  # the prefetch's own, only if the stream failed


async def test_a_layer_without_a_prefetch_region_stops_its_stream(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """No landmark: the stream ends once the TOC is read; a file is fetched when read."""
    data = random.Random(5).randbytes(300_000)
    blob, toc = estargz([("etc/data", data)], 64 << 10)
    registry = estargz_registry(blob, toc)
    seen = ranges_seen(registry, blob)
    root = store(registry, tmp_path, timeout=1e6)
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        diff = await directory(layer, "diff")
        await trio.testing.wait_all_tasks_blocked()
        before = len(seen)
        assert await read(await directory(diff, "etc"), "data") == data
        assert len(seen) > before  # not from the stream's bytes, which went


async def test_what_a_broken_stream_did_not_bring_is_fetched_on_the_mount_s_streams(
    autojump_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefetch's parts that were to come from the stream are fetched as background
    work when it breaks off: never more Range requests at once than the background's
    streams (``streams.py``). Its end is awaited on the real clock: 12 MiB are checked in
    worker threads, during which the virtual one runs far ahead."""
    caplog.set_level(logging.INFO)
    files = [(f"etc/f{number}", random.Random(number).randbytes(1 << 20)) for number in range(12)]
    blob, toc = estargz([*files, (".prefetch.landmark", b"v"), ("usr/rest", b"x")], 64 << 10)
    registry = estargz_registry(blob, toc)
    ranges_seen(registry, blob, STREAM_FAULTS["broken"])
    handle = registry.handle
    at_once = [0, 0]  # now, most

    async def counting(request: httpx.Request) -> httpx.Response:
        stream = request.headers.get("Range") == f"bytes=0-{len(blob) - 1}"
        if request.url.path.endswith(sha256(blob)) and "Range" in request.headers and not stream:
            at_once[0] += 1
            at_once[1] = max(at_once)
            try:
                await trio.sleep(0.05)
                return await handle(request)
            finally:
                at_once[0] -= 1
        return await handle(request)

    registry.handle = counting  # type: ignore[method-assign]
    root = store(registry, tmp_path, timeout=1e6)
    async with background_running(root):
        await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        give_up = time.monotonic() + 60
        while "prefetched the first" not in caplog.text:
            assert time.monotonic() < give_up, "the prefetch did not end"
            await trio.sleep(0.01)
    assert 0 < at_once[1] <= BACKGROUND_STREAMS


async def test_a_file_far_into_a_slow_stream_is_read_within_its_request_s_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A stream that would take minutes to bring the marked region (21 KB/s for 3.2 MB)
    ends within ``SLOW_WINDOW``, and a read of the last marked file fetches its own bytes:
    it took 147 s waiting for the stream, past any request's deadline. Virtual time runs
    only once nothing has run for 20 ms: indexing runs in worker threads."""
    autojump_clock.autojump_threshold = 0.02
    files = [(f"etc/f{n:02}", random.Random(n).randbytes(100_000)) for n in range(32)]
    blob, toc = estargz([*files, (".prefetch.landmark", b"v"), ("usr/rest", b"x")], 64 << 10)
    registry = estargz_registry(blob, toc)

    def slow(blob: bytes) -> httpx.Response:
        headers = {"Content-Range": f"bytes 0-{len(blob) - 1}/{len(blob)}"}
        return httpx.Response(206, headers=headers, stream=_SlowBody(blob, trio.sleep_forever))

    ranges_seen(registry, blob, slow)
    root = store(registry, tmp_path, timeout=10)
    async with background_running(root):
        layer = await directory(await directory(root, encoded(f"{HOST}/app:1")), sha256(blob))
        etc = await directory(await directory(layer, "diff"), "etc")
        start = trio.current_time()
        with request_deadline(10):
            assert await read(etc, "f31") == files[-1][1]
        assert trio.current_time() - start < SLOW_WINDOW + STALLED_AFTER + 1


async def test_a_head_sent_in_tiny_pieces_is_looked_through_a_few_times(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry may send the blob's start 20 bytes at a time, and a head of empty gzip
    members tells nothing until 64 KiB: it was inflated again with each piece (3 277
    times, 5.5 s of CPU); now each time it has doubled."""
    blob = gzip.compress(b"") * (LOOKED_AT // 20) + BLOB
    looks: list[int] = []
    monkeypatch.setattr(early_bytes, "marks_files",
                        lambda head: looks.append(len(head)) or marks_files(head))  # fmt: skip

    async def tiny(span: tuple[int, int], consume: Consume) -> None:
        for start in range(0, LOOKED_AT + 100, 20):
            if not await consume(blob[start : start + 20]):
                return

    early = EarlyBytes(len(blob))
    with trio.fail_after(PAUSED_AT_MOST + 10):
        await early.run(tiny)
    assert looks[-1] == LOOKED_AT and len(looks) <= 16, looks
    assert early.covered == 0  # empty members mark nothing: the stream ended


async def test_each_waiter_is_woken_once_its_bytes_are_all_here(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetch takes its parts from the stream all at once: 1 000 waiting, each piece
    woke all of them (4 000 waiting cost 24 s of CPU for 32 MiB); now each waits once."""
    waits: list[int] = []
    push = early_bytes.heappush
    monkeypatch.setattr(early_bytes, "heappush",
                        lambda heap, item: waits.append(item[0]) or push(heap, item))  # fmt: skip
    region = 1000 * 3000
    early = EarlyBytes(len(BLOB))
    early.want(region)
    got: dict[int, bytes | None] = {}

    async def part(start: int) -> None:
        got[start] = await early.take(start, start + 3000)

    async with trio.open_nursery() as nursery:
        for start in range(0, region, 3000):
            nursery.start_soon(part, start)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(early.run, blob_stream([]))
    assert all(got[start] == BLOB[start : start + 3000] for start in range(0, region, 3000))
    assert len(waits) == len(set(waits)) == 1000


async def test_a_stream_ended_and_taken_leaves_its_slot_to_the_next_layer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """One layer is streamed at a time; once its stream has ended and its bytes are taken,
    the next may be streamed, though the first layer's prefetch goes on (by Range)."""
    background = BackgroundWork()
    streamed: list[LayerRef] = []

    async def stream(layer: LayerRef, span: tuple[int, int], consume: Consume) -> None:
        streamed.append(layer)
        await blob_stream([])(span, consume)

    streams = EarlyStreams(background, stream)
    first, second = (LayerRef("127.0.0.1:5000", "app", Descriptor("application/x",
                     Digest.of(bytes([n])), len(BLOB))) for n in range(2))  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(background.run)
        await trio.testing.wait_all_tasks_blocked()
        streams.begin(first, len(BLOB))
        streams.want(first, 2 * PIECE)
        streams.begin(second, len(BLOB))  # the first still streams
        early = streams.of(first)
        assert early is not None and await early.take(0, PIECE) == BLOB[:PIECE]
        await trio.testing.wait_all_tasks_blocked()
        streams.begin(second, len(BLOB))  # ended, but a piece is not taken yet
        assert await early.take(PIECE, 2 * PIECE) == BLOB[PIECE : 2 * PIECE]
        streams.begin(second, len(BLOB))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert streamed == [first, second]


async def test_a_read_waiting_for_a_stream_that_flows_shares_its_progress(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A read of a marked file 8 MiB into the region (python opening a module late in the
    list) waits for a stream that brings 640 KB/s (a 5 Mbit/s link): 13 s, past a --timeout
    of 2 s, while each 2 s brings some; it was EIO at 2 s."""
    wanted = 2 * AHEAD_OF_TOC
    early = EarlyBytes(len(BLOB))
    early.want(wanted)

    async def paced(span: tuple[int, int], consume: Consume) -> None:
        for start in range(span[0], span[1], 64 << 10):
            await trio.sleep(0.1)
            if not await consume(BLOB[start : min(start + (64 << 10), span[1])]):
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early.run, paced)
        with request_deadline(2) as scope:
            assert await early.take(wanted - 100, wanted) == BLOB[wanted - 100 : wanted]
        assert not scope.cancelled_caught
        nursery.cancel_scope.cancel()
