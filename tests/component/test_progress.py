"""A body that trickles fails as too slow; bodies that share a slow link, and a small body
whose last bytes come late, do not."""

from __future__ import annotations

import pytest
import trio

from regfs.registry.retry_policy import MIN_PROGRESS, Progress, SharedLink, TooSlow


async def bring(progress: Progress, pieces: int, size: int, every: float) -> None:
    for _ in range(pieces):
        await trio.sleep(every)
        progress.add(size)


async def test_a_body_that_trickles_alone_is_too_slow(autojump_clock: trio.abc.Clock) -> None:
    progress = Progress(3, "GET /v2/a/blobs/x", link=SharedLink(), expected=4 << 20)
    with pytest.raises(TooSlow, match=r"GET /v2/a/blobs/x: \d+ bytes in 3s: too slow"):
        await bring(progress, 100, 1024, 0.5)


async def test_bodies_sharing_a_link_are_each_due_their_share(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Eight bodies at once, each at an eighth of the rate one would need alone."""
    link = SharedLink()
    piece = MIN_PROGRESS // 8 // 8
    async with trio.open_nursery() as nursery:
        for n in range(8):
            progress = Progress(3, f"body {n}", link=link, expected=piece * 80)
            nursery.start_soon(bring, progress, 80, piece, 3 / 8)


async def test_a_body_alone_at_that_rate_is_too_slow(autojump_clock: trio.abc.Clock) -> None:
    progress = Progress(3, "body", link=SharedLink(), expected=MIN_PROGRESS)
    with pytest.raises(TooSlow, match="too slow"):
        await bring(progress, 80, MIN_PROGRESS // 8 // 8, 3 / 8)


async def test_a_small_body_whose_last_bytes_come_late_is_not_too_slow(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A 40 KB body (less than ``MIN_PROGRESS``), its last piece after 3 s: complete."""
    progress = Progress(3, "body", link=SharedLink(), expected=40_000)
    await bring(progress, 4, 10_000, 0.9)


async def test_a_small_body_that_stops_short_of_its_end_is_too_slow(
    autojump_clock: trio.abc.Clock,
) -> None:
    progress = Progress(3, "body", expected=40_000)
    with pytest.raises(TooSlow, match="too slow"):
        await bring(progress, 40, 100, 1)
