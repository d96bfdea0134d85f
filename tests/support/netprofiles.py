"""Network profiles: a registry tens of milliseconds away over a link of limited rate.

This kernel has no ``netem`` qdisc, so the counting proxy (``tests/support/proxy.py``)
emulates the link itself, at the level of HTTP requests: each request waits one round trip
before it is answered (a request on a new connection one more, for TCP's handshake), and
every response body leaves through one shared ``Link`` that passes ``bandwidth`` bytes a
second, whatever the number of connections. What that leaves out (slow start, loss,
queueing delay, the request's own upload time) is written in docs/benchmarks.md.

The profiles are defined here only: the mount tests and ``scripts/bench.py --profile`` use
the same ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MBIT = 1_000_000 / 8
"""Bytes a second in one Mbit/s."""


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """A link to the registry: its round-trip time and the rate bodies arrive at."""

    name: str
    rtt: float
    """Seconds from sending a request to the first byte of its answer."""
    bandwidth: float
    """Bytes a second, shared by every connection."""

    def describe(self) -> str:
        return f"{self.name}: {self.rtt * 1000:g} ms RTT, {self.bandwidth / MBIT:g} Mbit/s"


PROFILES = {
    profile.name: profile
    for profile in (
        NetworkProfile("lan", rtt=0.001, bandwidth=1000 * MBIT),
        NetworkProfile("wan", rtt=0.030, bandwidth=100 * MBIT),
        NetworkProfile("far", rtt=0.100, bandwidth=20 * MBIT),
    )
}


class Link:
    """One emulated link, shared by every connection through a proxy.

    Bodies are cut into pieces; each piece is given the next free slot of the link's time
    (first come, first served), so connections sending at once share the rate instead of
    each getting all of it. Thread-safe: the proxy serves each connection in a thread.
    """

    PIECE = 32 << 10
    """Bytes sent per slot: small enough that parallel bodies interleave finely."""

    def __init__(self, profile: NetworkProfile) -> None:
        self.profile = profile
        self._lock = threading.Lock()
        self._free_at = 0.0
        """``time.monotonic()`` at which the link has sent everything it was given."""

    def round_trip(self, *, new_connection: bool) -> None:
        """Wait as a request does for its answer to begin (plus a handshake on a new
        connection)."""
        time.sleep(self.profile.rtt * (2 if new_connection else 1))

    def send(self, body: bytes, write: Callable[[bytes], object]) -> None:
        """Pass ``body`` to ``write`` no faster than the link's rate allows."""
        for start in range(0, len(body), self.PIECE):
            piece = body[start : start + self.PIECE]
            with self._lock:
                begins = max(time.monotonic(), self._free_at)
                self._free_at = begins + len(piece) / self.profile.bandwidth
                arrives = self._free_at
            wait = arrives - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            write(piece)
