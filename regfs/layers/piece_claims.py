"""Pieces of layer content, and the claims on those being fetched.

Layers layer: the vocabulary of ``pieces.py`` and its bookkeeping of single flight. A
``Piece`` is named by the sha256 of its bytes; a reader's ``Fetch`` makes missing ones
and hands them over. A caller about to fetch ``Claim``s each missing piece: its
``Flight`` is what others asking for that piece wait on, ended with its bytes, its
error, or nothing (the fetcher was cancelled: a waiter then fetches it itself).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from regfs.domain.errors import MalformedContent, RegfsError
from regfs.registry.request_deadline import SharedProgress

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Piece(Generic[S]):
    """A piece of a layer's stream: ``size`` bytes at ``start``, hashing to ``sha256``,
    made from ``source`` (what its reader needs: a TOC chunk, a chunk number)."""

    sha256: bytes
    start: int
    size: int
    source: S
    what: str
    """Names the piece in messages: the layer and where in it."""

    @property
    def end(self) -> int:
        return self.start + self.size


Made = Sequence[tuple[Piece[S], "bytes | MalformedContent"]]
"""Pieces a fetch made, each with its bytes (unchecked) or why they could not be made."""
Deliver = Callable[[Made[S]], Awaitable[None]]
Fetch = Callable[[Sequence[Piece[S]], Deliver[S]], Awaitable[None]]
"""``fetch(missing, deliver)``: make the missing pieces, handing them to ``deliver`` as
they come; a failure of the network raises (the pieces not yet delivered fail with it)."""


class Flight:
    """One piece being fetched. Done with ``data`` or ``error``, or with neither if its
    fetcher was cancelled: a waiter then fetches it itself. ``progress``: its fetcher's,
    which is a waiter's too (a run of megabytes on a slow link takes longer than a
    waiting read's ``--timeout`` while it keeps coming)."""

    __slots__ = ("data", "done", "error", "progress")

    def __init__(self, progress: SharedProgress) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: RegfsError | None = None
        self.progress = progress


class Claim(Generic[S]):
    """The pieces one caller has claimed (each in flight under its name until it ends)."""

    def __init__(self, flights: dict[bytes, Flight]) -> None:
        self._flights = flights
        self.progress = SharedProgress()
        """The progress of this claim's fetch, shared by everyone waiting on its pieces."""
        self._mine: dict[bytes, Flight] = {}
        self.pieces: dict[bytes, Piece[S]] = {}
        """Claimed and not ended yet."""
        self.unsaved: list[tuple[bytes, bytes]] = []
        """Asked for and found in memory, not on disk yet: the caller stores them."""
        self.along: set[bytes] = set()
        """Claimed pieces nobody asked for (a TOC miss's neighbours): fetched with the
        others, kept in memory only, let go if they cannot be made."""

    def add(self, piece: Piece[S], *, along: bool = False) -> None:
        self._mine[piece.sha256] = self._flights[piece.sha256] = Flight(self.progress)
        self.pieces[piece.sha256] = piece
        if along:
            self.along.add(piece.sha256)

    @property
    def asked(self) -> int:
        """Claimed pieces someone asked for, not ended yet."""
        return len(self.pieces) - len(self.along)

    def resolve(self, sha256: bytes, data: bytes) -> None:
        self._end(sha256, data=data)

    def fail(self, sha256: bytes, error: RegfsError) -> None:
        self._end(sha256, error=error)

    def abandon(self, names: Iterable[bytes] | None = None) -> None:
        """End the flights of ``names`` (by default all still open) with no outcome: the
        fetcher was cancelled, or the piece is on disk; whoever waits asks again."""
        for sha256 in list(self.pieces) if names is None else names:
            self._end(sha256)

    def _end(
        self, sha256: bytes, *, data: bytes | None = None, error: RegfsError | None = None
    ) -> None:
        del self.pieces[sha256]
        self.along.discard(sha256)
        flight = self._mine.pop(sha256)
        if self._flights.get(sha256) is flight:
            del self._flights[sha256]
        flight.data, flight.error = data, error
        flight.done.set()
