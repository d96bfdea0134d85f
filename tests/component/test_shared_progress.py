"""A request waiting for work another task does is credited with that work's progress
(``registry/request_deadline.py``): its deadline of ``--timeout`` without progress moves
while the bytes keep coming elsewhere, and passes when they stop. Through a single flight
(``layers/shared_work.py``), a layer's size (``layers/diff_sizes.py``), and both nested.
Autojump clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from regfs.layers.diff_sizes import DiffSizes
from regfs.layers.shared_work import SharedWork
from regfs.registry.request_deadline import progressed, request_deadline

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
