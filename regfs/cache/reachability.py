"""Asking a registry when the cache has an answer to fall back on.

Cache layer: imports nothing from regfs but the domain and the request deadline. What
the cache keeps (a confirmed manifest, config or layer; the last tag list) is used while
a registry cannot be reached: it failed with ``Unavailable`` (refused, reset, DNS, 5xx,
429 after the session's retries, its deadline passed), or gave no answer within
``patience`` (each piece of an answer, a catalog's page, gives it ``patience`` more). A
refusal (401/403) or "unknown" (404) from a registry that answered is never an outage: it
is the caller's to raise, so revoked access and deleted tags take effect at once.

A host found unreachable is not asked again for ``RECHECK`` seconds by callers that have
something to fall back on, so a listing of many names during an outage costs no wait per
name; callers with nothing kept still ask (the registry may be back), and fail as before.
The wait for an answer ends ``MARGIN`` seconds before the caller's own deadline (a FUSE
request's), so there is always time left to answer from the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from regfs.domain.errors import RegfsError, Unavailable
from regfs.registry.request_deadline import moved_by_progress

log = logging.getLogger(__name__)

RECHECK = 5.0
MARGIN = 0.5
T = TypeVar("T")
K = TypeVar("K")


class Reachability:
    def __init__(self, *, patience: float, recheck: float = RECHECK) -> None:
        """``patience``: seconds to wait for a registry when something kept could answer."""
        self._patience = patience
        self._recheck = recheck
        self._down: dict[str, tuple[float, str]] = {}
        """Hosts that could not be reached: when it was noticed (trio clock) and why."""
        self._when_back: list[Callable[[str], None]] = []

    def when_back(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(host)`` whenever a host found unreachable answers again (to stop
        showing what was kept while it was away)."""
        self._when_back.append(callback)

    def unreachable(self) -> dict[str, str]:
        """Hosts that could not be reached when last asked, and why (``regfs status``)."""
        return {host: why for host, (_, why) in self._down.items()}

    def _known_down(self, host: str) -> bool:
        noticed = self._down.get(host)
        return noticed is not None and trio.current_time() - noticed[0] < self._recheck

    async def ask(self, host: str, ask: Callable[[], Awaitable[T]], kept: K | None) -> T | K:
        """``ask()``'s answer; or, when ``host`` cannot be reached and ``kept`` is not
        None, ``kept``. With nothing kept, this is ``ask()``, noting whether it answered."""
        if kept is None:
            return await self._asked(host, ask)
        if self._known_down(host):
            return kept
        give_up = min(
            trio.current_time() + self._patience, trio.current_effective_deadline() - MARGIN
        )
        # a registry that keeps answering (a catalog's pages) is not away: its progress
        # moves the wait, as it moves the request's
        with trio.move_on_at(give_up) as waited, moved_by_progress(waited, self._patience):
            try:
                return await self._asked(host, ask)
            except Unavailable:
                return kept
        self._down[host] = (trio.current_time(), f"no answer within {self._patience:g}s")
        return kept

    async def _asked(self, host: str, ask: Callable[[], Awaitable[T]]) -> T:
        try:
            answer = await ask()
        except Unavailable as error:
            if host not in self._down:
                log.info("%s cannot be reached (%s): what the cache has is served", host, error)
            self._down[host] = (trio.current_time(), str(error))
            raise
        except RegfsError:  # a refusal or "unknown": the registry answered
            self._answered(host)
            raise
        self._answered(host)
        return answer

    def _answered(self, host: str) -> None:
        if self._down.pop(host, None) is not None:
            log.info("%s answers again", host)
            for callback in self._when_back:
                callback(host)
