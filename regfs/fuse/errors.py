"""The one place domain errors become errnos, and are logged.

FUSE layer. Every handler is wrapped by ``translate_errors``: a domain error is logged
once with what was asked and becomes its errno; anything unexpected is logged with a
traceback and becomes EIO, so no request can take the daemon down.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from regfs.domain.errors import (
    AccessDenied,
    MalformedContent,
    NotFound,
    ProtocolError,
    RegfsError,
    Unavailable,
    VerificationFailed,
)

log = logging.getLogger("regfs.fuse")

ERRNO_BY_ERROR: dict[type[RegfsError], int] = {
    NotFound: errno.ENOENT,
    AccessDenied: errno.EACCES,
    Unavailable: errno.EIO,
    ProtocolError: errno.EIO,
    MalformedContent: errno.EIO,
    VerificationFailed: errno.EIO,
}

P = ParamSpec("P")
R = TypeVar("R")


def errno_for(error: RegfsError) -> int:
    for kind in type(error).__mro__:
        if kind in ERRNO_BY_ERROR:
            return ERRNO_BY_ERROR[kind]
    return errno.EIO


def translate_errors(
    operation: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Let only ``FUSEError`` leave a handler; log each failure once, with context."""

    @functools.wraps(operation)
    async def handler(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except NotFound as error:
            log.debug("%s: %s", operation.__name__, error)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except RegfsError as error:
            log.warning("%s: %s", operation.__name__, error)
            raise pyfuse3.FUSEError(errno_for(error)) from None
        except Exception:
            log.exception("%s: unexpected failure", operation.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler
