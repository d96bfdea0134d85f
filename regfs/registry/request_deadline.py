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

A registry call inside may have a deadline of its own that is ``--timeout`` without
progress too (``moved_by_progress``: a Range request whose body is megabytes on a slow
link): ``progressed()`` moves it as it moves the request's.

A request may also wait for work another task does: a layer's download begun by another
request, or indexed in the background for a layer store's ``info``. That work's progress
is the waiting request's too (``SharedProgress``: the work runs ``leading`` it, waiters
wait ``waiting_on`` it); else a request joining a download that goes well would time out
when it has taken ``--timeout`` (an 80 MB layer at 20 Mbit/s takes 32 s).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import trio

from regfs.domain.errors import Unavailable


@dataclass(slots=True, eq=False)
class _Request:
    scope: trio.CancelScope
    timeout: float
    working: int = 0
    """Local work in progress (nested ``working`` blocks)."""
    progressed_at: float = -math.inf
    """When (trio clock) it last made progress; -inf: never."""


_CURRENT: ContextVar[_Request | None] = ContextVar("regfs_request", default=None)


class SharedProgress:
    """Work one task does that others wait for; those waiting on it (requests, and work
    led elsewhere that waits on it) are told of its progress as of their own."""

    __slots__ = ("_waiting", "blocked_on")

    def __init__(self) -> None:
        self._waiting: list[_Request | SharedProgress] = []
        self.blocked_on: Callable[[], str] | None = None
        """What the work waits for now, said by a waiter whose ``--timeout`` it outlasts
        (``blocked_on()``); None: the waiter's own ``Cancelled`` says enough."""

    def _progressed(self, told: set[SharedProgress]) -> None:
        for waiting in list(self._waiting):
            if isinstance(waiting, _Request):
                _extend(waiting)
            elif waiting not in told:  # two works waiting on each other are told once
                told.add(waiting)
                waiting._progressed(told)


_SHARED: ContextVar[SharedProgress | None] = ContextVar("regfs_shared_progress", default=None)
_MOVED: ContextVar[tuple[_Request, ...]] = ContextVar("regfs_moved_by_progress", default=())
"""Scopes inside the current task's work that ``progressed()`` moves too, innermost last."""


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
    """What the current request waits for is arriving: it may wait ``timeout`` more, and
    so may those waiting on the work it leads."""
    request = _CURRENT.get()
    if request is not None:
        _extend(request)
    for moved in _MOVED.get():
        _extend(moved)
    shared = _SHARED.get()
    if shared is not None:
        shared._progressed({shared})


def request_expired() -> bool:
    """Whether the current request's deadline has passed: a ``Cancelled`` caught now is its
    ``--timeout``, which the catcher may name (not a shutdown, not another scope's)."""
    request = _CURRENT.get()
    return request is not None and trio.current_time() >= request.scope.deadline


@contextlib.contextmanager
def moved_by_progress(scope: trio.CancelScope, timeout: float) -> Iterator[None]:
    """While inside, each ``progressed()`` moves ``scope``'s deadline to ``timeout`` from
    then at least: a call's own deadline that a body arriving in time must not cut."""
    token = _MOVED.set((*_MOVED.get(), _Request(scope, timeout)))
    try:
        yield
    finally:
        _MOVED.reset(token)


def idle_for() -> float | None:
    """Seconds since the current request last made progress, if it ever did: what its
    timeout's message says when a body stopped coming (None: outside a request, or
    nothing came)."""
    request = _CURRENT.get()
    if request is None or math.isinf(request.progressed_at):
        return None
    return trio.current_time() - request.progressed_at


def _extend(request: _Request) -> None:
    request.progressed_at = trio.current_time()
    if not request.working and not math.isinf(request.timeout):
        request.scope.deadline = max(request.scope.deadline, trio.current_time() + request.timeout)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Work for the mount, begun by a request (a task inherits the context of the task
    that starts it): no request's deadline moves with its progress or its local work, and
    what it waits on is waited on in no request's name."""
    request, shared, moved = _CURRENT.set(None), _SHARED.set(None), _MOVED.set(())
    try:
        yield
    finally:
        _MOVED.reset(moved)
        _SHARED.reset(shared)
        _CURRENT.reset(request)


@contextlib.contextmanager
def leading(shared: SharedProgress) -> Iterator[None]:
    """Do the work of ``shared`` here: its progress is told to those waiting on it, and
    to the work this task was leading before (which waits on it now)."""
    outer = _SHARED.get()
    token = _SHARED.set(shared)
    with _waited_on_by(shared, [outer] if outer is not None else []):
        try:
            yield
        finally:
            _SHARED.reset(token)


@contextlib.contextmanager
def waiting_on(shared: SharedProgress) -> Iterator[None]:
    """Wait here for the work of ``shared``: its progress moves the current request's
    deadline, and is that of the work this task leads."""
    waiting = [w for w in (_CURRENT.get(), _SHARED.get()) if w is not None and w is not shared]
    with _waited_on_by(shared, waiting):
        yield


@contextlib.contextmanager
def _waited_on_by(
    shared: SharedProgress, waiting: list[_Request | SharedProgress]
) -> Iterator[None]:
    shared._waiting.extend(waiting)
    try:
        yield
    finally:
        for one in waiting:
            shared._waiting.remove(one)


@contextlib.contextmanager
def blocked_on(describe: Callable[[], str]) -> Iterator[None]:
    """This task waits, while inside, for what ``describe()`` names (another process): a
    request whose ``--timeout`` passes meanwhile fails with that, here or waiting on the
    work this task leads (``SharedProgress.blocked_on``)."""
    shared = _SHARED.get()
    saved = shared.blocked_on if shared is not None else None
    if shared is not None:
        shared.blocked_on = describe
    try:
        yield
    except trio.Cancelled:
        if request_expired():
            raise Unavailable(describe()) from None
        raise
    finally:
        if shared is not None:
            shared.blocked_on = saved


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
