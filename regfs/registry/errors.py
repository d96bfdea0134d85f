"""Turning HTTP failures into domain errors, and deciding which ones deserve a retry.

Registry layer. The registry's JSON error body (``{"errors": [{"code", "message"}]}``) is
read with a size bound and named in the message, so a log line says *why*. Every
exception httpx can raise maps to a domain error here, so none reaches the FUSE layer.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import math
import ssl

import httpx

from regfs.domain.errors import AccessDenied, NotFound, ProtocolError, RegfsError, Unavailable

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict)
"""Everything httpx raises (``HTTPError`` covers transport, decoding and redirect errors)."""
TEMPORARY_HTTPX_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,  # connect, read, write, close
    httpx.RemoteProtocolError,  # a reset or a server that closed mid-response
    httpx.ProxyError,
)
"""Failures the next attempt may not meet; the rest (a bad URL, a redirect loop, an
unknown scheme, an undecodable body) would fail the same way again."""


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an httpx error (an unknown CA, a name mismatch), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe(error: BaseException) -> str:
    """``ConnectError: …``: the kind of failure, and httpx's words for it when it has any."""
    tls = tls_failure(error)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or tls.reason or str(tls)
        return f"TLS: {reason}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def is_temporary(error: BaseException) -> bool:
    """A failure the next attempt may not meet; a certificate that fails will fail again."""
    return isinstance(error, TEMPORARY_HTTPX_ERRORS) and tls_failure(error) is None


def error_for_exception(error: BaseException, what: str) -> RegfsError:
    """The domain error for an httpx exception; ``what`` names the request."""
    kind = Unavailable if is_temporary(error) else ProtocolError
    return kind(f"{what}: {describe(error)}")


def error_codes(body: bytes) -> str:
    """``MANIFEST_UNKNOWN: manifest unknown`` from an error body, or an excerpt of it, on
    one line: a proxy's HTML page or a message with line breaks or terminal escapes must
    not break the log line it goes into, nor forge the next."""
    try:
        document = json.loads(body)
        errors = document["errors"]
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors]
        return _one_line("; ".join(parts))[:300]
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return _one_line(body[:200].decode("utf-8", "replace"))


def _one_line(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def error_for_status(status: int, body: bytes, what: str) -> RegfsError:
    """The domain error for a final (non-2xx) status; ``what`` names the request."""
    detail = error_codes(body)
    message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 404:
        return NotFound(message)
    if status in (401, 403):
        return AccessDenied(message)
    if status in RETRYABLE_STATUSES or (status >= 500 and status != NOT_IMPLEMENTED):
        return Unavailable(message)
    return UnexpectedStatus(message)


NOT_IMPLEMENTED = 501
"""A server's answer to a method or an API it does not have (RFC 9110): an answer, not a
failure to reach it; so is its ``_catalog`` that a registry does not offer."""


class UnexpectedStatus(ProtocolError):
    """A final status that says nothing of what was asked for (405, 400, 501, …): maybe
    a refusal of the request's form only, as a registry that serves GET but not HEAD."""


class RetryLater(Exception):
    """A failure worth sending the whole request again for (a 5xx, 429 or 408 from the
    registry or its token endpoint), carrying the error to raise if no attempt is left."""

    def __init__(self, error: RegfsError, retry_after: str | None, *, once: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        """The answer's ``Retry-After`` header, if it had one."""
        self.once = once
        """Worth one more attempt only (a signed redirect URL that expired)."""


def retry_after_seconds(value: str | None, ceiling: float, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header, capped at ``ceiling``: a number of seconds,
    or an HTTP-date (RFC 9110: always GMT; ``now``: seconds since the epoch), which rate
    limiters send too; None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            date = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = date.replace(tzinfo=date.tzinfo or datetime.UTC).timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), ceiling)
