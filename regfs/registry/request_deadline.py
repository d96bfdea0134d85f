"""The deadline of one FUSE request: ``--timeout`` without progress, not in all.

Registry layer (registry calls and the layers above share it). Everything one request does
runs in one cancel scope (``fuse/errors.py``), so a syscall that needs several registry
calls fails within one ``--timeout``, not one per call. But a request may legitimately
take longer: a layer's first pass downloads and indexes a blob that may be hundreds of
megabytes on a slow link, and "the body may take as long as it needs, if it keeps coming"
is the rule for blobs (``registry/retry_policy.Progress``). So the scope's deadline moves:

- ``progressed()``: bytes the request waits for arrived (a blob's body): it may wait
  ``--timeout`` more;
- ``working()``: local work the request waits for (indexing a verified blob, a large
  listing from an index), bounded by itself: not cut, and the wait starts again after it.

Outside a request (``regfs prefetch``, a mount's prefetches) both do nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import trio


@dataclass(slots=True)
class _Request:
    scope: trio.CancelScope
    timeout: float
    working: int = 0
    """Local work in progress (nested ``working`` blocks)."""


_CURRENT: ContextVar[_Request | None] = ContextVar("regfs_request", default=None)


@contextlib.contextmanager
def request_deadline(timeout: float) -> Iterator[trio.CancelScope]:
    """Run a request's body in a scope that ends ``timeout`` seconds after its start or
    its last progress (its ``cancelled_caught`` says if it did)."""
    with trio.move_on_after(timeout) as scope:
        token = _CURRENT.set(_Request(scope, timeout))
        try:
            yield scope
        finally:
            _CURRENT.reset(token)


def progressed() -> None:
    """What the current request waits for is arriving: it may wait ``timeout`` more."""
    request = _CURRENT.get()
    if request is not None and not request.working and not math.isinf(request.timeout):
        request.scope.deadline = max(request.scope.deadline, trio.current_time() + request.timeout)


@contextlib.contextmanager
def working() -> Iterator[None]:
    """Local work the current request waits for: not cut by its deadline (which must not
    have passed yet), and ``timeout`` more to wait after it."""
    request = _CURRENT.get()
    if request is None or request.scope.cancel_called:
        yield
        return
    request.working += 1
    saved = request.scope.deadline
    request.scope.deadline = math.inf
    try:
        yield
    finally:
        request.working -= 1
        if not request.working:
            request.scope.deadline = max(saved, trio.current_time() + request.timeout)
