"""Reading answers' bodies: as sent and never beyond a stated size, fed to a consumer as
they arrive, and the bytes a Range request asked for.

Registry layer. A Range answer gives exactly the bytes asked for: a 206 must say it starts
where asked (``Content-Range``), a 200 carrying the whole blob (a registry or CDN that
ignores Range) is read only as far as needed; a body that broke off or came short is a
``RetryLater``, asked for again by ``http.py``. Transport failures leave as domain errors.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import cast

import httpx

from regfs.domain.errors import MalformedContent, ProtocolError, Unavailable
from regfs.registry.errors import HTTPX_ERRORS, RetryLater, error_for_exception
from regfs.registry.retry_policy import Progress, TooSlow

Consumer = Callable[[bytes], Awaitable[bool]]
"""Takes a body's bytes as they come; False stops the body."""


async def read_limited(
    response: httpx.Response, limit: int, *, truncate: bool, decoded: bool,
    progress: Progress | None = None,
) -> bytes:  # fmt: skip
    """The body (as sent, or ``decoded``), up to ``limit`` bytes: cut there (``truncate``)
    or refused beyond it, if possible before reading any of it; each piece told to
    ``progress``, if given."""
    what = f"{response.request.method} {response.request.url}"
    declared = response.headers.get("content-length", "")
    has_body = response.request.method != "HEAD"  # a HEAD's length is the GET's
    if has_body and not truncate and declared.isdigit() and int(declared) > limit:
        raise MalformedContent(f"{what}: response of {declared} bytes, more than {limit}")
    parts = []  # joined once at the end: growing one buffer copies a big body many times
    received = 0
    # Closed explicitly: leaving the loop early must not leave the generator to the GC.
    chunks = response.aiter_bytes() if decoded else response.aiter_raw()
    async with contextlib.aclosing(cast(AsyncGenerator[bytes, None], chunks)) as stream:
        async for chunk in stream:
            parts.append(chunk)
            received += len(chunk)
            if progress is not None:
                progress.add(len(chunk))
            if received <= limit:
                continue
            if truncate:
                return b"".join(parts)[:limit]
            raise MalformedContent(f"{what}: response larger than {limit} bytes")
    return b"".join(parts)


async def consume_raw(response: httpx.Response, what: str, consume: Consumer) -> None:
    """Feed the body's bytes, as sent, to ``consume`` until it returns False or the body
    ends; transport failures become domain errors. The response is closed after."""
    received = 0
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    try:
        async with contextlib.aclosing(chunks) as stream:
            async for chunk in stream:
                received += len(chunk)
                if not await consume(chunk):
                    break
    except HTTPX_ERRORS as error:
        failure = error_for_exception(error, f"{what} after {received} bytes")
        raise (BrokenOff(str(failure)) if isinstance(failure, Unavailable) else failure) from None
    finally:
        await response.aclose()


class BrokenOff(Unavailable):
    """A body the connection broke off (a reset, fewer bytes than ``Content-Length``, a
    timeout between chunks): the rest may be asked for, unlike a body that trickled."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def read_range(
    response: httpx.Response, start: int, end: int, what: str, progress: Progress
) -> bytes:
    """Bytes ``[start, end)`` of the blob from a 2xx ``response`` to a Range request, which
    this closes; its body's pieces are told to ``progress`` (which fails a trickle, for
    good: asking again would trickle again)."""
    try:
        if response.status_code == 206:
            _check_content_range(response, start, what)
            body = await read_limited(
                response, end - start, truncate=False, decoded=False, progress=progress
            )
        else:
            body = await _slice_of_whole_body(response, start, end, what, progress)
    except TooSlow:
        raise
    except HTTPX_ERRORS as error:
        mapped = error_for_exception(error, what)
        raise (_cut_short(mapped) if isinstance(mapped, Unavailable) else mapped) from None
    except Unavailable as error:  # broken off while sliced from a whole body
        raise _cut_short(error) from None
    finally:
        await response.aclose()
    if len(body) != end - start:
        raise _cut_short(Unavailable(f"{what}: Range {start}-{end - 1} returned {len(body)} bytes"))
    return body


async def consume_range(response: httpx.Response, start: int, what: str, consume: Consumer) -> None:
    """Feed the blob's bytes from ``start`` on, from a 2xx ``response`` to a Range request
    (a 206 for that range, or a 200 carrying the whole blob), to ``consume`` until it
    returns False or the body ends; the response is closed after."""
    if response.status_code == 206:
        try:
            _check_content_range(response, start, what)
        except ProtocolError:
            await response.aclose()
            raise
        await consume_raw(response, what, consume)
        return
    if response.status_code != 200:
        await response.aclose()
        raise ProtocolError(f"{what}: Range from {start} answered {response.status_code}")
    await consume_raw(response, what, _from(start, consume))


def _from(start: int, consume: Consumer) -> Consumer:
    """``consume`` fed a whole blob's bytes from ``start`` on (a 200 to a Range request)."""
    position = 0

    async def skipping(data: bytes) -> bool:
        nonlocal position
        chunk_start, position = position, position + len(data)
        return position <= start or await consume(data[max(0, start - chunk_start) :])

    return skipping


def _cut_short(error: Unavailable) -> RetryLater:
    return RetryLater(error, retry_after=None)


def _check_content_range(response: httpx.Response, start: int, what: str) -> None:
    """A 206 must be the range asked for: bytes from another offset would pass as ours."""
    header = response.headers.get("content-range")
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if header is not None and (match is None or int(match.group(1)) != start):
        raise ProtocolError(f"{what}: asked for bytes from {start}, got {header[:100]!r}")


async def _slice_of_whole_body(
    response: httpx.Response, start: int, end: int, what: str, progress: Progress
) -> bytes:
    """``[start, end)`` of a 200 answer carrying the whole blob, read only as far as needed."""
    if response.status_code != 200:
        raise ProtocolError(f"{what}: Range {start}-{end - 1} answered {response.status_code}")
    wanted = bytearray()

    async def keep(data: bytes) -> bool:
        progress.add(len(data))
        wanted.extend(data[: end - start - len(wanted)])
        return len(wanted) < end - start

    await consume_raw(response, what, _from(start, keep))
    return bytes(wanted)
