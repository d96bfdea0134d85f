"""How often a request is sent, and how long between: the one retry policy of regfs.

Registry layer. Only the HTTP session retries (``registry/http.py``): a temporary
failure (a connection refused or reset, a body broken off, 5xx, 429, 408) is sent again,
up to the place's attempts, ``MAX_ATTEMPTS`` at a registry itself and ``HANDOVER_ATTEMPTS``
(one) at a place that has a next one to hand over to: a mirror, or a foreign layer's URL
that is not the last; and one at a host that could not be connected to moments ago
(``UNREACHABLE_RECHECK`` in ``registry/http.py``). Nothing else above the session retries
a request. Two things ask again without being retries: a whole blob's body broken off
after some of it came is continued from where it broke, by a Range request, as many times
as the place's attempts while each brings more (``registry/blob_stream.py``); and, for
integrity, not transport, a layer piece whose bytes fail their hash is fetched once more
(``layers/pieces.py``).

Time is bounded separately, by trio cancel scopes: each registry call by ``--timeout``
(``Deadline``), and everything one FUSE request does, attempts and waits included, by one
scope of ``--timeout`` too (``fuse/errors.py``).
"""

from __future__ import annotations

import math
import random
from typing import Any

import trio

from regfs.domain.errors import Unavailable
from regfs.registry.request_deadline import idle_for, moved_by_progress, progressed

MAX_ATTEMPTS = 4
HANDOVER_ATTEMPTS = 1
"""At a place with a next one: the next place is its retry, and retrying would only delay it."""
FIRST_BACKOFF = 0.25
"""Seconds before the second attempt; each later wait doubles."""
MIN_PROGRESS = 64 << 10
"""Bytes a blob download must bring every ``timeout`` seconds."""


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1): exponential, with
    jitter, so that many mounts refused at once do not come back at once."""
    return FIRST_BACKOFF * 2.0 ** (attempt - 1) * (0.5 + random.random())


class Deadline:
    """A registry call's deadline, ``seconds`` from now: its expiry, or the expiry of the
    caller's own while waiting on this call (a FUSE request's, a mirror's half), becomes
    ``Unavailable`` naming what timed out, so the log says what was waited for."""

    def __init__(
        self, seconds: float, what: str, *, missing: str = "no answer", moving: bool = False
    ) -> None:
        """``missing``: what the message says did not come in time; ``moving``: the
        deadline is ``seconds`` without progress (``progressed``), not in all, for a call
        whose body may be megabytes on a slow link (a Range request)."""
        self._scope = trio.move_on_after(seconds)
        self._moved = moved_by_progress(self._scope, seconds) if moving else None
        self._seconds = seconds
        self._what = what
        self._missing = missing
        self._started = 0.0
        self._callers = math.inf

    def __enter__(self) -> None:
        self._started = trio.current_time()
        self._callers = trio.current_effective_deadline()
        self._scope.__enter__()
        if self._moved is not None:
            self._moved.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        if self._moved is not None:
            self._moved.__exit__(*exc_info)
        self._scope.__exit__(*exc_info)  # suppresses only what it caught: raised below
        now = trio.current_time()
        callers_passed = isinstance(exc_info[1], trio.Cancelled) and now >= self._callers
        if self._scope.cancelled_caught or callers_passed:
            if self._callers <= self._started:  # "within 0s" would blame this call
                raise Unavailable(f"{self._what}: not sent, the time for it was spent "
                                  "before (the request's --timeout)")  # fmt: skip
            # tenths: the caller's scope (a FUSE request's) began a moment before this one
            waited = round(now - self._started, 1)
            idle = self._seconds if self._moved is not None else idle_for()
            if idle is not None and idle < waited:  # it came, then stopped
                raise Unavailable(f"{self._what}: {self._missing} within {waited:g}s, "
                                  f"nothing for the last {idle:.1f}s")  # fmt: skip
            raise Unavailable(f"{self._what}: {self._missing} within {waited:g}s")


class TooSlow(Unavailable):
    """A body that keeps coming, too slowly to ever end: not asked for again."""


class SharedLink:
    """The bodies a session is receiving, which share one link: each is due only its share
    of ``MIN_PROGRESS``. Eight Range requests at once on a 1 Mbit/s link bring 16 KB/s
    each, all healthy. A body counts as receiving while it brought bytes within its window."""

    def __init__(self) -> None:
        self._last_bytes: dict[Progress, float] = {}
        """When each body last brought bytes."""

    def brought(self, body: Progress, now: float, window: float) -> int:
        """``body`` brought bytes at ``now``: how many bodies are receiving, itself among
        them (those silent for longer than ``window`` are forgotten)."""
        self._last_bytes[body] = now
        for other, when in list(self._last_bytes.items()):
            if now - when > window:
                del self._last_bytes[other]
        return len(self._last_bytes)

    def done(self, body: Progress) -> None:
        self._last_bytes.pop(body, None)


class Progress:
    """Fails a body that trickles: each ``window`` seconds must bring ``at_least`` bytes
    (a stall is httpx's read timeout; a byte a second would otherwise never end), or its
    share of them when it shares ``link`` with other bodies, and never more than it has
    left to bring when its size is ``expected``."""

    def __init__(
        self,
        window: float,
        what: str,
        at_least: int = MIN_PROGRESS,
        *,
        link: SharedLink | None = None,
        expected: int | None = None,
    ) -> None:
        self._window = window
        self._what = what
        self._at_least = at_least
        self._link = link
        self._left = math.inf if expected is None else expected
        """Bytes of the body still to come when this window began."""
        self._start = trio.current_time()
        self._bytes = 0
        self._most_sharing = 1
        """The most bodies receiving at once on the link in this window."""

    def add(self, size: int) -> None:
        self._bytes += size
        progressed()
        now = trio.current_time()
        if self._link is not None:
            sharing = self._link.brought(self, now, self._window)
            self._most_sharing = max(self._most_sharing, sharing)
        if self._bytes >= self._left:
            self._end()
            return
        if now - self._start < self._window:
            return
        due = min(self._at_least / self._most_sharing, self._left)
        if self._bytes < due:
            self._end()
            at_once = f", {self._most_sharing} bodies at once" if self._most_sharing > 1 else ""
            raise TooSlow(f"{self._what}: {self._bytes} bytes in {now - self._start:.0f}s"
                          f"{at_once}: too slow")  # fmt: skip
        self._left -= self._bytes
        self._start, self._bytes, self._most_sharing = now, 0, 1

    def _end(self) -> None:
        if self._link is not None:
            self._link.done(self)
