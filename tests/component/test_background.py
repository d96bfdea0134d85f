"""The one owner of a mount's own work: each kind of work begun once per layer (or key),
layers indexed ahead begun in the order each asker gave and a few at a time, a failure one log line,
and nothing begun where no background runs (``regfs prefetch``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from regfs.domain.digest import Digest
from regfs.domain.errors import Unavailable
from regfs.domain.manifest import Descriptor
from regfs.layers.background import BackgroundWork
from regfs.layers.layer_ref import LayerRef

Work = Callable[[LayerRef], Awaitable[object]]


def layer(n: int) -> LayerRef:
    digest = Digest.parse("sha256:" + f"{n:02x}" * 32)
    return LayerRef("127.0.0.1:5000", "app", Descriptor("application/x", digest, 10))


class Recorder:
    """Work that records when each layer began and ended, taking ``seconds``."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.begun: list[int] = []
        self.running = 0
        self.most_at_once = 0

    async def work(self, ref: LayerRef) -> None:
        self.begun.append(int(ref.digest.hex[:2], 16))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await trio.sleep(self.seconds)
        finally:
            self.running -= 1


async def running(background: BackgroundWork, body: Callable[[], Awaitable[None]]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(background.run)
        await trio.testing.wait_all_tasks_blocked()
        await body()
        nursery.cancel_scope.cancel()


async def test_layers_ahead_begin_in_the_order_asked_a_few_at_a_time_each_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    slots = trio.CapacityLimiter(3)
    for _ in range(20):  # trio runs tasks started together in either order: try both
        background, recorder = BackgroundWork(), Recorder()

        async def body(background: BackgroundWork = background, work: Work = recorder.work) -> None:
            ahead = [layer(n) for n in (7, 6, 5, 4, 3, 2)]
            background.start_in_turn("indexing ahead", ahead, work, slots)
            # asked again with one more: only that one is added (in its own turn)
            background.start_in_turn("indexing ahead", [layer(5), layer(1)], work, slots)
            await trio.sleep(10)

        await running(background, body)
        assert [n for n in recorder.begun if n != 1] == [7, 6, 5, 4, 3, 2]
        assert sorted(recorder.begun) == [1, 2, 3, 4, 5, 6, 7]
        assert recorder.most_at_once == 3
    assert slots.borrowed_tokens == 0


async def test_work_is_begun_once_per_key_and_a_failure_is_one_line(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    background = BackgroundWork()
    calls: list[str] = []

    async def fails() -> None:
        calls.append("fetch")
        raise Unavailable("no answer within 3s")

    async def body() -> None:
        for _ in range(3):
            background.start_once("background fetch", layer(1), fails, key="index-a")
        background.start_once("background fetch", layer(1), fails, key="index-b")
        background.start_once("prefetch", layer(1), fails, key="index-a")
        await trio.testing.wait_all_tasks_blocked()

    with caplog.at_level(logging.INFO, logger="regfs.layers.background"):
        await running(background, body)
    assert calls == ["fetch"] * 3
    stopped = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert len(stopped) == 3
    assert all(message.endswith("stopped: no answer within 3s") for message in stopped)


async def test_nothing_is_begun_where_no_background_runs(autojump_clock: trio.abc.Clock) -> None:
    background, recorder = BackgroundWork(), Recorder()
    assert not background.start("read-ahead", layer(1), lambda: recorder.work(layer(1)))
    background.start_in_turn("indexing ahead", [layer(2)], recorder.work,
                             trio.CapacityLimiter(1))  # fmt: skip
    # once one runs, what was asked before is not marked as begun
    await running(background, lambda: trio.sleep(0))
    assert recorder.begun == []

    async def body() -> None:
        background.start_in_turn("indexing ahead", [layer(2)], recorder.work,
                                 trio.CapacityLimiter(1))  # fmt: skip
        await trio.sleep(2)

    await running(background, body)
    assert recorder.begun == [2]
