"""The deadline of the request being served, shared by every registry call made for it.

Domain layer: pure. The FUSE layer sets it when a request arrives (now + ``--timeout``);
each registry call ends by it as well as by its own deadline, so a syscall that needs
several calls (a tag, its manifest, a blob's Range requests) fails within about one
``--timeout``, not one per call. Outside a request it is infinite.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

CALLER_DEADLINE: ContextVar[float] = ContextVar("regfs_caller_deadline", default=math.inf)
"""In trio's clock (``trio.current_time()``)."""
