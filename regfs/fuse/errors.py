"""The one place domain errors become errnos, and are logged.

FUSE layer. Every handler is wrapped by ``translate_errors``: a domain error is logged
(once a minute for the same failure) with what was asked and becomes its errno; anything
unexpected is logged with a traceback and becomes EIO, so no request can take the daemon
down. With ``--debug`` every request is logged as it arrives (``lookup(1, 'ghcr.io')``).
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import cachetools
import pyfuse3

from regfs.domain.errors import (
    AccessDenied,
    Evicted,
    MalformedContent,
    NotFound,
    ProtocolError,
    ReadOnly,
    RegfsError,
    Unavailable,
    VerificationFailed,
)
from regfs.registry.request_deadline import request_deadline

log = logging.getLogger("regfs.fuse")

ERRNO_BY_ERROR: dict[type[RegfsError], int] = {
    NotFound: errno.ENOENT,
    AccessDenied: errno.EACCES,
    Unavailable: errno.EIO,
    ProtocolError: errno.EIO,
    MalformedContent: errno.EIO,
    VerificationFailed: errno.EIO,
    ReadOnly: errno.EROFS,
}

REPEAT_QUIET = 60.0
"""Seconds during which the same failure is logged again only at DEBUG."""
P = ParamSpec("P")
R = TypeVar("R")


def errno_for(error: RegfsError) -> int:
    for kind in type(error).__mro__:
        if kind in ERRNO_BY_ERROR:
            return ERRNO_BY_ERROR[kind]
    return errno.EIO


IN_FLIGHT = [0]
"""FUSE requests being served now (one mount per process): ``regfs status`` shows it."""


LOCAL_STORAGE_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM,
    errno.EMFILE, errno.ENFILE,
})  # fmt: skip
"""What the cache dir's disk or the process's limits, not a bug, make a file operation
fail with: one line. Any other ``OSError`` (a file not found, a directory where a file
was expected) is a bug, shown with its traceback."""


def translate_errors(
    operation: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Let only ``FUSEError`` leave a handler; log each failure once, with context.

    Everything a request does runs in one cancel scope of the handler's owner's
    ``request_timeout``: its registry calls, their retries, and its waits for what another
    request is fetching, so a syscall that needs several calls (a tag, its manifest, a
    blob's Range requests) fails within one ``--timeout``, not one per call; a blob that
    keeps arriving, and local work such as indexing it, move that deadline
    (``registry/request_deadline.py``). A registry
    call cut off by it says what it waited for (``registry/retry_policy.Deadline``); anything
    else is EIO here. Work started for the mount rather than the request (prefetches)
    runs in the mount's own nursery, outside it.
    """

    @functools.wraps(operation)
    async def handler(*args: P.args, **kwargs: P.kwargs) -> R:
        timeout = getattr(args[0], "request_timeout", math.inf)  # the Operations instance
        IN_FLIGHT[0] += 1
        try:
            with request_deadline(timeout):
                return await _translated(operation, *args, **kwargs)
            _log_once(operation.__name__, Unavailable(f"no answer within {timeout:g}s"))
            raise pyfuse3.FUSEError(errno.EIO)
        finally:
            IN_FLIGHT[0] -= 1

    return handler


async def _translated(
    operation: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run one request; let only ``FUSEError`` out, logged with context."""
    if log.isEnabledFor(logging.DEBUG):
        shown = [_describe(argument) for argument in args[1:]]  # not self
        described = ", ".join(text for text in shown if text is not None)
        log.debug("%s(%s)", operation.__name__, described)
    try:
        return await _rebuilt_once(operation, *args, **kwargs)
    except pyfuse3.FUSEError:
        raise
    except (NotFound, ReadOnly) as error:  # answers, not failures of the daemon
        log.debug("%s: %s", operation.__name__, error)
        raise pyfuse3.FUSEError(errno_for(error)) from None
    except RegfsError as error:
        _log_once(operation.__name__, error)
        raise pyfuse3.FUSEError(errno_for(error)) from None
    except OSError as error:
        if error.errno not in LOCAL_STORAGE_ERRNOS:
            log.exception("%s: unexpected failure", operation.__name__)
        else:  # the cache dir's disk (full, read-only, failing): said once, not a bug
            _log_once(operation.__name__, RegfsError(f"the cache dir: {error}"))
        raise pyfuse3.FUSEError(errno.EIO) from None
    except Exception:
        log.exception("%s: unexpected failure", operation.__name__)
        raise pyfuse3.FUSEError(errno.EIO) from None


async def _rebuilt_once(
    operation: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run one request; if it met a file another process evicted from the cache dir
    (``Evicted``), build that again and ask once more. Asking again is safe: the mount
    is read-only, and what fails so fails before its answer is given (an index query;
    ``readdir`` ends its page before the entry instead, once it has given some)."""
    try:
        return await operation(*args, **kwargs)
    except Evicted as error:
        if error.rebuild is None:
            raise
        log.info("%s: %s: built again", operation.__name__, error)
        await error.rebuild()
    return await operation(*args, **kwargs)


_recently_logged: cachetools.TTLCache[str, None] = cachetools.TTLCache(1024, REPEAT_QUIET)


def _log_once(operation: str, error: RegfsError) -> None:
    """A warning for a failure, unless the same one was just logged: the kernel retries a
    failed read, and ``ls -l`` meets a broken layer once per name, with one cause."""
    message = str(error)
    if message in _recently_logged:
        log.debug("%s: %s (again)", operation, message)
        return
    _recently_logged[message] = None
    log.warning("%s: %s", operation, message)


def _describe(argument: object) -> str | None:
    """An argument of a request as the log shows it: names decoded; None for the kernel's
    request context and readdir token, which say nothing to a reader of the log."""
    if isinstance(argument, bytes):
        return repr(os.fsdecode(argument))
    if isinstance(argument, int | str):
        return repr(argument)
    if isinstance(argument, list | tuple):
        return repr(argument[:8]) + ("…" if len(argument) > 8 else "")
    return None
