"""How far to read ahead of a reader going through a file from start to end.

Layers layer, pure. The kernel asks for a file 128 KiB at a time, and one round trip per
ask is what makes a cold file slow on a real link. A read that starts where an earlier
read of the stream ended (or at its file's start) is sequential: the window after it
doubles at each such read, from ``FIRST_WINDOW`` up to ``LARGEST_WINDOW``, as the kernel's
own read-ahead does, and more is asked for once less than half of the window is left
ahead, so the reader finds its next bytes fetched. A read elsewhere is random: no
read-ahead. Nothing is read ahead past the end of the file being read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FIRST_WINDOW = 512 << 10
LARGEST_WINDOW = 16 << 20
CURSORS = 16
"""Readers going through one stream at once that are told apart (files read side by side)."""


@dataclass(slots=True)
class _Cursor:
    window: int
    """Bytes to keep fetched ahead of this reader (0: it reads at random)."""
    ahead_until: int
    """Where what was asked for ahead of it ends."""


class ReadAhead:
    """Reads of one stream (a layer's), and what to fetch ahead of them."""

    def __init__(self) -> None:
        self._cursors: OrderedDict[int, _Cursor] = OrderedDict()
        """By the offset the reader's next sequential read would start at."""

    def after(self, start: int, end: int, file_start: int, file_end: int) -> tuple[int, int] | None:
        """A read of ``[start, end)`` of the file at ``[file_start, file_end)`` of the
        stream: the range to fetch ahead of it now, if any."""
        cursor = self._cursors.pop(start, None)
        if cursor is not None or start == file_start:  # sequential
            cursor = cursor or _Cursor(0, end)
            cursor.window = min(max(cursor.window * 2, FIRST_WINDOW), LARGEST_WINDOW)
        else:
            cursor = _Cursor(0, end)
        self._cursors[end] = cursor
        while len(self._cursors) > CURSORS:
            self._cursors.popitem(last=False)
        target = min(end + cursor.window, file_end)
        begin = max(end, cursor.ahead_until)
        if not cursor.window or target <= begin or begin - end >= cursor.window // 2:
            return None
        cursor.ahead_until = target
        return begin, target
