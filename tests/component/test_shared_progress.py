"""A request waiting for work another task does is credited with that work's progress
(``registry/request_deadline.py``): its deadline of ``--timeout`` without progress moves
while the bytes keep coming elsewhere, and passes when they stop. Through a single flight
(``layers/shared_work.py``, whoever leads it), a layer's size (``layers/diff_sizes.py``),
and both nested; work a request begins for the mount (``layers/background.py``) moves no
request's deadline. Autojump clock."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from regfs.cache.memory import listings_lru
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.layers.background import BackgroundWork
from regfs.layers.diff_sizes import DiffSizes
from regfs.layers.early_index import EarlyIndexes
from regfs.layers.layer_ref import LayerRef
from regfs.layers.open_indexes import OpenIndexes
from regfs.layers.shared_work import SharedWork
from regfs.registry.request_deadline import progressed, request_deadline, working

TIMEOUT = 1.0
WORK = 5.0
"""Seconds the shared work takes: far longer than a request's timeout."""


async def download(progressing: bool) -> str:
    """Five seconds of work, telling its progress every half second, or not at all."""
    for _ in range(int(WORK / 0.5)):
        await trio.sleep(0.5)
        if progressing:
            progressed()
    return "done"


async def as_request(wait: Callable[[], Awaitable[object]]) -> tuple[object, bool]:
    """``wait()`` inside a FUSE request's deadline: what it gave, and if the deadline
    passed."""
    value = None
    with request_deadline(TIMEOUT) as scope:
        value = await wait()
    return value, scope.cancelled_caught


@pytest.mark.parametrize("progressing", [True, False])
async def test_a_request_joining_a_flight_shares_its_leader_s_progress(
    autojump_clock: trio.abc.Clock, progressing: bool
) -> None:
    work: SharedWork[str] = SharedWork()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(work.run, "layer", lambda: download(progressing))
        await trio.sleep(0.1)  # the background task leads
        started = trio.current_time()
        value, timed_out = await as_request(lambda: work.run("layer", lambda: download(True)))
        assert timed_out is not progressing
        if progressing:
            assert value == "done"
            assert trio.current_time() - started == pytest.approx(WORK - 0.1)
        else:
            assert trio.current_time() - started == pytest.approx(TIMEOUT)


async def test_a_request_leading_shares_its_progress_with_those_joining(
    autojump_clock: trio.abc.Clock,
) -> None:
    work: SharedWork[str] = SharedWork()
    results: list[tuple[object, bool]] = []

    async def request() -> None:
        results.append(await as_request(lambda: work.run("layer", lambda: download(True))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request)
        await trio.sleep(0.1)
        nursery.start_soon(request)
    assert results == [("done", False), ("done", False)]


@pytest.mark.parametrize("progressing", [True, False])
@pytest.mark.parametrize("led_ahead", [True, False])
async def test_a_size_waited_for_shares_the_progress_of_the_indexing_it_waits_on(
    autojump_clock: trio.abc.Clock, progressing: bool, led_ahead: bool
) -> None:
    """As a layer store's ``info``: the size is told by a background task following the
    layer's indexing, which leads the index's flight, or joins it where another task
    leads it (the index asked for ahead); the download's progress reaches the request
    through both."""
    sizes = DiffSizes()
    work: SharedWork[str] = SharedWork()

    async def indexed_size() -> int:
        return len(await work.run("layer", lambda: download(progressing)))

    async with trio.open_nursery() as nursery:
        if led_ahead:
            nursery.start_soon(work.run, "layer", lambda: download(progressing))
            await trio.sleep(0.1)
        nursery.start_soon(sizes.follow, "layer", indexed_size)
        value, timed_out = await as_request(lambda: sizes.wait("layer"))
        assert timed_out is not progressing
        assert value == (len("done") if progressing else None)
        nursery.cancel_scope.cancel()


async def test_the_others_share_the_progress_of_who_takes_over_from_a_cancelled_leader(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A leads and is interrupted after 2.75 s, a quarter second after its last progress;
    B takes over, and its first progress comes half a second later; C, waiting all along,
    shares B's progress, not that of A's abandoned work."""
    work: SharedWork[str] = SharedWork()
    results: dict[str, object] = {}

    async def request(name: str, interrupted_after: float = math.inf) -> None:
        with trio.move_on_after(interrupted_after):
            results[name] = await as_request(lambda: work.run("layer", lambda: download(True)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, "A", 2.75)
        await trio.sleep(0.1)
        nursery.start_soon(request, "B")
        await trio.sleep(0.1)
        nursery.start_soon(request, "C")
    assert "A" not in results
    assert results["B"] == results["C"] == ("done", False)


async def test_work_a_request_begins_for_the_mount_moves_no_request_s_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A request starts background work (read-ahead, indexing ahead) that makes progress
    for 5 s, then waits for something that never comes: it ends at its own timeout."""
    background = BackgroundWork()
    digest = Digest.parse("sha256:" + "ab" * 32)
    layer = LayerRef("127.0.0.1:5000", "app", Descriptor("application/x", digest, 10))

    async def begin_then_wait() -> None:
        background.start("read-ahead", layer, lambda: download(True))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background.run)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        assert await as_request(begin_then_wait) == (None, True)
        assert trio.current_time() - started == pytest.approx(TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_a_request_waiting_for_an_index_built_behind_is_not_cut_by_its_work(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An index built as the mount's own work (``early_index.py``) indexes its TOC in a
    worker thread, longer here than the waiting request's timeout: as for the request's
    own local work, its deadline waits."""
    background = BackgroundWork()
    indexes = OpenIndexes()
    early = EarlyIndexes(background, indexes, listings_lru())
    digest = Digest.parse("sha256:" + "cd" * 32)
    layer = LayerRef("127.0.0.1:5000", "app", Descriptor("application/x", digest, 10))

    async def build() -> None:
        with working():
            await trio.sleep(WORK)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background.run)
        await trio.testing.wait_all_tasks_blocked()
        assert await as_request(lambda: early.build(layer, build)) == (None, False)
        nursery.cancel_scope.cancel()
