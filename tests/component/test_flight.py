from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from regfs.cache.flight import SingleFlight


async def test_concurrent_callers_share_one_computation(autojump_clock: trio.abc.Clock) -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0
    results: list[int] = []

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await trio.sleep(1)
        return 42

    async def caller() -> None:
        results.append(await flight.run("key", compute))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(caller)
    assert calls == 1 and results == [42] * 10
    assert flight.in_flight() == 0


async def test_errors_are_shared_and_not_remembered(autojump_clock: trio.abc.Clock) -> None:
    flight: SingleFlight[int] = SingleFlight()
    failures = 0

    async def failing() -> int:
        await trio.sleep(1)
        raise ValueError("no")

    async def caller() -> None:
        nonlocal failures
        with pytest.raises(ValueError):
            await flight.run("key", failing)
        failures += 1

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
    assert failures == 3

    async def succeeding() -> int:
        return 1

    assert await flight.run("key", succeeding) == 1


async def test_a_cancelled_leader_hands_over(autojump_clock: trio.abc.Clock) -> None:
    flight: SingleFlight[str] = SingleFlight()
    leaders: list[str] = []
    results: list[str] = []

    def compute_as(name: str) -> Callable[[], Awaitable[str]]:
        async def compute() -> str:
            leaders.append(name)
            await trio.sleep(1)
            return name

        return compute

    async def caller(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            results.append(await flight.run("key", compute_as(name)))

    async with trio.open_nursery() as nursery:
        leader = await nursery.start(caller, "leader")
        await trio.sleep(0.1)
        await nursery.start(caller, "follower")
        await trio.sleep(0.1)
        leader.cancel()
    assert leaders == ["leader", "follower"]
    assert results == ["follower"]
