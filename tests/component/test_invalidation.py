"""The kernel invalidator: each mutable inode invalidated once, when its TTL has passed."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from regfs.fuse.invalidation import KernelInvalidator


class Kernel:
    """Records invalidations with the (virtual) time they happened at."""

    def __init__(self, forgotten: frozenset[int] = frozenset()) -> None:
        self.forgotten = forgotten
        self.calls: list[tuple[float, int]] = []

    def invalidate(self, inode: int) -> None:
        self.calls.append((trio.current_time(), inode))
        if inode in self.forgotten:
            raise OSError(errno.ENOENT, "No such file or directory")


class OnTheLoop(KernelInvalidator):
    """Calls the kernel on the loop: worker threads and a virtual clock do not mix."""

    async def _invalidate_in_thread(self, inodes: list[int]) -> None:
        self._invalidate_all(inodes)


async def test_each_inode_is_invalidated_once_when_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kernel = Kernel(forgotten=frozenset({9}))
    marked: list[tuple[int, int]] = []  # (inode, invalidations before it was marked)
    invalidator = OnTheLoop(
        kernel.invalidate, lambda inode: marked.append((inode, len(kernel.calls)))
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(invalidator.run)
        invalidator.schedule(5, 10)
        invalidator.schedule(9, 3)  # forgotten by the kernel: ENOENT, ignored
        await trio.sleep(4)
        invalidator.schedule(5, 1)  # already waiting: keeps its first time
        await trio.sleep(7)
        assert [inode for _, inode in kernel.calls] == [9, 5] and invalidator.waiting == 0
        assert [round(when) for when, _ in kernel.calls] == [3, 10]
        invalidator.schedule(5, 2)  # cached again after the invalidation: a new round
        await trio.sleep(3)
        assert [inode for _, inode in kernel.calls] == [9, 5, 5]
        assert marked == [(9, 0), (5, 1), (5, 2)]  # each marked changed just before
        nursery.cancel_scope.cancel()


async def test_an_unexpected_failure_is_logged_and_the_rest_still_invalidated(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[int] = []

    def invalidate(inode: int) -> None:
        if inode == 1:
            raise OSError(errno.EIO, "Input/output error")
        done.append(inode)

    invalidator = OnTheLoop(invalidate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(invalidator.run)
        invalidator.schedule(1, 1)
        invalidator.schedule(2, 1)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert done == [2]
    assert "cannot invalidate inode 1 in the kernel" in caplog.text
