"""Turning HTTP failures into domain errors, and deciding which ones deserve a retry.

Registry layer. The registry's JSON error body (``{"errors": [{"code", "message"}]}``) is
read with a size bound and named in the message, so a log line says *why*.
"""

from __future__ import annotations

import json

from regfs.domain.errors import AccessDenied, NotFound, ProtocolError, RegfsError, Unavailable

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def error_codes(body: bytes) -> str:
    """``MANIFEST_UNKNOWN: manifest unknown`` from an error body, or an excerpt of it."""
    try:
        document = json.loads(body)
        errors = document["errors"]
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors]
        return "; ".join(parts)[:300]
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace").strip()


def error_for_status(status: int, body: bytes, what: str) -> RegfsError:
    """The domain error for a final (non-2xx) status; ``what`` names the request."""
    detail = error_codes(body)
    message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 404:
        return NotFound(message)
    if status in (401, 403):
        return AccessDenied(message)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Unavailable(message)
    return ProtocolError(message)


def retry_after_seconds(value: str | None, ceiling: float) -> float | None:
    """Seconds from a ``Retry-After: <seconds>`` header, capped; None if absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), ceiling)
