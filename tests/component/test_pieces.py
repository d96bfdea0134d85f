"""The one verifying getter, asked for many pieces at once: each missing piece is claimed
before its fetch, so one fetch serves everyone waiting for any of them; nothing that does
not hash to its name is returned or kept; a piece damaged on the way is fetched once more.
And the streams a mount's Range requests share: the most urgent first."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.domain.errors import MalformedContent, Unavailable, VerificationFailed
from regfs.layers.piece_claims import Deliver, Piece
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.streams import Priority, Streams
from regfs.registry.request_deadline import progressed, request_deadline

DATA = [bytes([n]) * (1000 + n) for n in range(8)]


def piece(n: int) -> Piece[int]:
    return Piece(hashlib.sha256(DATA[n]).digest(), sum(map(len, DATA[:n])), len(DATA[n]), n,
                 f"piece {n}")  # fmt: skip


class Source:
    """Makes pieces on request, after ``delay`` seconds, damaging the first ``damage``
    deliveries of the pieces named in ``damaged``."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: list[list[int]] = []
        self.damaged: dict[int, int] = {}
        self.fails: Exception | None = None
        self.extra: list[int] = []
        """Pieces made on the way besides those asked for."""

    async def fetch(self, missing: Sequence[Piece[int]], deliver: Deliver[int]) -> None:
        self.calls.append([p.source for p in missing])
        await trio.sleep(self.delay)
        if self.fails is not None:
            raise self.fails
        made = []
        for p in [*missing, *(piece(n) for n in self.extra)]:
            data = DATA[p.source]
            if self.damaged.get(p.source, 0) > 0:
                self.damaged[p.source] -= 1
                data = b"X" + data[1:]
            made.append((p, data))
        await deliver(made)


@pytest.fixture
def pieces(tmp_path: Path) -> VerifiedPieces:
    return VerifiedPieces(ChunkCache(CacheLayout(tmp_path), 1 << 30))


async def test_many_pieces_one_fetch_and_the_disk_after(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    wanted = [piece(n) for n in range(4)]
    assert await pieces.get(wanted, source.fetch) == DATA[:4]
    assert source.calls == [[0, 1, 2, 3]]
    assert all(pieces.chunks.has(p.sha256) for p in wanted)
    assert await pieces.get(wanted, source.fetch) == DATA[:4]  # memory now
    assert len(source.calls) == 1


async def test_a_piece_read_from_disk_is_then_served_from_memory(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Small files read one after another share a chunk: loading and hashing it from disk
    for each of them cost a rootfs walk 20 times a local disk's time."""
    source = Source()
    await VerifiedPieces(ChunkCache(CacheLayout(tmp_path), 1 << 30)).get([piece(0)], source.fetch)
    later = VerifiedPieces(ChunkCache(CacheLayout(tmp_path), 1 << 30))  # a new mount
    for _ in range(3):
        assert await later.get([piece(0)], source.fetch) == DATA[:1]
    assert (later.reads.disk, later.reads.memory, len(source.calls)) == (1, 2, 1)


async def test_readers_of_overlapping_ranges_share_one_fetch_per_piece(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    results: dict[str, list[bytes]] = {}

    async def reader(name: str, numbers: list[int]) -> None:
        results[name] = await pieces.get([piece(n) for n in numbers], source.fetch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, "first", [0, 1, 2, 3])
        await trio.sleep(0.1)  # the first has claimed 0-3 and fetches them
        nursery.start_soon(reader, "second", [2, 3, 4, 5])
    assert results == {"first": DATA[0:4], "second": DATA[2:6]}
    assert sorted(source.calls) == [[0, 1, 2, 3], [4, 5]]  # in the order threads end


async def test_a_read_ahead_never_fetches_what_is_in_flight_or_cached(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    await pieces.get([piece(0)], source.fetch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pieces.get, [piece(1), piece(2)], source.fetch)
        await trio.sleep(0.1)
        await pieces.load([piece(n) for n in range(5)], source.fetch)
    assert sorted(source.calls) == [[0], [1, 2], [3, 4]]


async def test_a_damaged_piece_is_fetched_once_more_then_refused_and_never_kept(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    source.damaged = {1: 1}
    assert await pieces.get([piece(0), piece(1)], source.fetch) == DATA[:2]
    assert source.calls == [[0, 1], [1]]  # only the damaged one again
    source.damaged = {2: 2}
    with pytest.raises(VerificationFailed, match="piece 2 does not match"):
        await pieces.get([piece(2), piece(3)], source.fetch)
    assert not pieces.cached(piece(2).sha256)
    assert pieces.cached(piece(3).sha256)  # its intact neighbour is kept
    with pytest.raises(VerificationFailed):  # remembered a moment: the kernel's retry
        await pieces.get([piece(2)], source.fetch)
    assert len(source.calls) == 4
    await trio.sleep(3)
    assert await pieces.get([piece(2)], source.fetch) == [DATA[2]]


async def test_pieces_made_on_the_way_are_kept_only_if_intact(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    source.extra = [5, 6]
    source.damaged = {6: 1}
    await pieces.get([piece(4)], source.fetch)
    assert pieces.cached(piece(5).sha256) and not pieces.cached(piece(6).sha256)


async def test_pieces_made_on_the_way_reach_the_disk_once_asked_for(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    """A TOC miss brings a few hundred neighbours; creating their files cost more than the
    Range request. They wait in memory until a read (or a prefetch) asks for them."""
    source = Source()
    source.extra = [5, 6, 7]
    await pieces.get([piece(4)], source.fetch)
    assert pieces.chunks.has(piece(4).sha256)
    assert not any(pieces.chunks.has(piece(n).sha256) for n in (5, 6, 7))
    assert await pieces.get([piece(5)], source.fetch) == [DATA[5]]
    await pieces.load([piece(6)], source.fetch)
    assert len(source.calls) == 1  # both from memory
    assert pieces.chunks.has(piece(5).sha256) and pieces.chunks.has(piece(6).sha256)
    assert not pieces.chunks.has(piece(7).sha256)
    later = VerifiedPieces(pieces.chunks)  # a new mount: what was read is there
    assert await later.get([piece(5)], source.fetch) == [DATA[5]]
    assert len(source.calls) == 1


async def test_pieces_along_come_with_a_fetch_and_only_with_one(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    """A TOC miss's neighbours: fetched in the same call when something must be fetched,
    kept in memory only, and never the cause of a read's failure."""
    source = Source()
    source.damaged = {2: 1}
    assert await pieces.get([piece(0)], source.fetch, along=[piece(1), piece(2)]) == [DATA[0]]
    assert source.calls == [[0, 1, 2]]  # 2 came damaged: let go, not fetched again
    assert pieces.chunks.has(piece(0).sha256) and not pieces.chunks.has(piece(1).sha256)
    assert pieces.cached(piece(1).sha256) and not pieces.cached(piece(2).sha256)
    assert await pieces.get([piece(0)], source.fetch, along=[piece(3)]) == [DATA[0]]
    assert len(source.calls) == 1  # nothing to fetch: nothing along either
    assert await pieces.get([piece(2)], source.fetch, along=[piece(1)]) == [DATA[2]]
    assert source.calls[1:] == [[2]]  # 1 is in memory: not asked again


async def test_a_network_failure_fails_every_waiter_of_the_fetch(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    source = Source()
    source.fails = Unavailable("registry down")
    failures = []

    async def reader(numbers: list[int]) -> None:
        try:
            await pieces.get([piece(n) for n in numbers], source.fetch)
        except Unavailable as error:
            failures.append(str(error))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, [0, 1])
        await trio.sleep(0.1)
        nursery.start_soon(reader, [1])
    assert failures == ["registry down", "registry down"]
    assert len(source.calls) == 1


async def test_a_cancelled_fetcher_leaves_its_pieces_to_those_who_wait(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    slow, quick = Source(delay=10), Source(delay=1)
    got: list[bytes] = []

    async def waiter() -> None:
        got.extend(await pieces.get([piece(0)], quick.fetch))

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(2):
            nursery.start_soon(waiter)  # starts after the fetcher below has claimed
            await pieces.get([piece(0), piece(1)], slow.fetch)
    assert got == [DATA[0]]
    assert quick.calls == [[0]]


async def test_bytes_that_cannot_be_made_are_malformed(
    pieces: VerifiedPieces, autojump_clock: trio.abc.Clock
) -> None:
    async def broken(missing: Sequence[Piece[int]], deliver: Deliver[int]) -> None:
        await deliver([(p, MalformedContent(f"{p.what}: cannot decompress")) for p in missing])

    with pytest.raises(MalformedContent, match="piece 0: cannot decompress"):
        await pieces.get([piece(0)], broken)


async def test_streams_go_to_the_most_urgent_and_background_stays_within_its_share(
    autojump_clock: trio.abc.Clock,
) -> None:
    streams = Streams(total=1, background=1)
    order: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        async with streams.slot(priority):
            order.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(request, f"background {n}", Priority.BACKGROUND)
            await trio.sleep(0.01)
        nursery.start_soon(request, "ahead", Priority.AHEAD)
        await trio.sleep(0.01)
        nursery.start_soon(request, "waited", Priority.WAITED)
    assert order == ["background 0", "waited", "ahead", "background 1", "background 2"]
    assert streams.busy() == 0


async def test_background_fetches_leave_streams_free(autojump_clock: trio.abc.Clock) -> None:
    streams = Streams(total=3, background=1)
    started: list[tuple[Priority, float]] = []

    async def request(priority: Priority) -> None:
        async with streams.slot(priority):
            started.append((priority, trio.current_time() - begun))
            await trio.sleep(1)

    begun = trio.current_time()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(request, Priority.BACKGROUND)
        await trio.sleep(0.5)
        nursery.start_soon(request, Priority.WAITED)
        nursery.start_soon(request, Priority.WAITED)
    # background one at a time, and readers beside it at once
    assert started == [(Priority.BACKGROUND, 0), (Priority.WAITED, 0.5), (Priority.WAITED, 0.5),
                       (Priority.BACKGROUND, 1), (Priority.BACKGROUND, 2)]  # fmt: skip


async def test_a_stream_waiter_cancelled_frees_its_turn(autojump_clock: trio.abc.Clock) -> None:
    streams = Streams(total=1, background=1)
    got = []

    async def request(name: str) -> None:
        async with streams.slot(Priority.WAITED):
            got.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, "first")
        await trio.sleep(0.1)
        with trio.move_on_after(0.2):
            await request("cancelled")
        nursery.start_soon(request, "last")
    assert got == ["first", "last"]
    assert streams.busy() == 0


@pytest.mark.parametrize("progressing", [True, False])
async def test_a_reader_waiting_on_another_s_fetch_shares_its_progress(
    pieces: VerifiedPieces, autojump_clock: trio.testing.MockClock, progressing: bool
) -> None:
    """A read waits for pieces a read-ahead fetches: on a slow link the run takes longer
    than the read's --timeout (1 s here, 5 s the run), which passes only if nothing comes.
    Virtual time runs only once nothing has run for 20 ms: pieces are hashed in a worker
    thread."""
    autojump_clock.autojump_threshold = 0.02

    fetching = trio.Event()

    async def slow_fetch(missing: Sequence[Piece[int]], deliver: Deliver[int]) -> None:
        fetching.set()
        for _ in range(10):
            await trio.sleep(0.5)
            if progressing:
                progressed()
        await deliver([(p, DATA[p.source]) for p in missing])

    wanted = [piece(n) for n in range(4)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pieces.load, wanted, slow_fetch)
        await fetching.wait()  # the read-ahead has claimed them and fetches
        started = trio.current_time()
        with request_deadline(1.0) as scope:
            assert await pieces.get(wanted, Source().fetch) == DATA[:4]
        assert scope.cancelled_caught is not progressing
        waited = trio.current_time() - started
        assert waited == pytest.approx(5.0 if progressing else 1.0)
