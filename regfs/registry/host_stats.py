"""What the client knows of each registry host: its requests, its last error, and
whether it is unreachable or silent now, with the times those states last.

Registry layer (``http.py`` keeps the records; ``regfs status`` shows them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNREACHABLE_RECHECK = 5.0
"""Seconds after a request could not connect to a host with all its attempts in which the
next get one each: in an outage, a path looked up name by name fails at once, not in a
``--timeout`` per name. Also the seconds after a host let a request's deadline pass
without answering anything in which each request is given ``SILENT_PROBE``."""
SILENT_PROBE = 2.0
"""Seconds a host found silent moments ago is given to begin an answer (its status line;
the body then has the request's whole deadline): back, it answers well within them; still
silent (it takes connections and never answers, or drops them), a request fails in them,
not in a whole ``--timeout`` (podman looks a store's layers up one after another). Silent:
a request waited at least half of ``--timeout`` up to its deadline and the host answered
nothing, to it or to any other request, since it was sent; a slow host that answers is
never silent."""


@dataclass(slots=True)
class HostStats:
    requests: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    """Seconds since the epoch."""
    unreachable_at: float | None = None
    """When (trio clock) a request last failed to connect with all its attempts, until an answer."""
    answered_at: float = -math.inf
    """When (trio clock) the host last began an answer (its status line)."""
    silent_at: float | None = None
    """When (trio clock) a request's deadline passed with no answer from the host to any
    request since it was sent, until an answer."""
    silent_for: float = 0.0
    """Seconds the request that found the host silent waited."""
