"""How often a request is sent, and how long between: the one retry policy of regfs.

Registry layer, pure. Only the HTTP session retries (``registry/http.py``): a temporary
failure (a connection refused or reset, a body broken off, 5xx, 429, 408) is sent again,
up to the place's attempts, ``MAX_ATTEMPTS`` at a registry itself and ``HANDOVER_ATTEMPTS``
(one) at a place that has a next one to hand over to: a mirror, or a foreign layer's URL
that is not the last. Nothing else above the session retries a request; the one other
repeat is for integrity, not transport: a layer piece whose bytes fail their hash is
fetched once more (``layers/pieces.py``).

Time is bounded separately, by trio cancel scopes: each registry call by ``--timeout``
(``http.Deadline``), and everything one FUSE request does, attempts and waits included,
by one scope of ``--timeout`` too (``fuse/errors.py``).
"""

from __future__ import annotations

import random

MAX_ATTEMPTS = 4
HANDOVER_ATTEMPTS = 1
"""At a place with a next one: the next place is its retry, and retrying would only delay it."""
FIRST_BACKOFF = 0.25
"""Seconds before the second attempt; each later wait doubles."""


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1): exponential, with
    jitter, so that many mounts refused at once do not come back at once."""
    return FIRST_BACKOFF * 2.0 ** (attempt - 1) * (0.5 + random.random())
