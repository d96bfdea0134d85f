"""HTTP for the registry client: retries, deadlines, bounded bodies, one error vocabulary.

Registry layer. ``HttpSession`` owns the httpx client (auth flow, redirects, per-host
TLS, the guard against being sent to private addresses: ``registry/guard.py``). A request
is retried on temporary failures (connection errors, resets, a body broken off, 5xx, 429
with ``Retry-After``) as ``registry/retry_policy.py`` says, up to the attempts the caller's
place allows; this is the only place a request is sent again (a whole blob broken off
midway is continued, not sent again: ``registry/blob_stream.py``). The caller puts the whole
thing under a ``Deadline``. Bodies are read as sent unless a listing asks for them
``decoded``, and never beyond a stated size; a Range answer gives exactly the bytes asked
for, or is asked for again if its body broke off (``registry/bodies.py``). Every failure
leaves as a domain error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from regfs.domain.errors import (
    AccessDenied,
    NotFound,
    RegfsError,
    Unavailable,
)
from regfs.registry.auth import (
    ANONYMOUS,
    CREDENTIALS_SOURCE,
    MAX_TOKEN_RESPONSE,
    RegistryAuth,
)
from regfs.registry.bodies import read_limited, read_range
from regfs.registry.credentials import CredentialProvider
from regfs.registry.errors import (
    HTTPX_ERRORS,
    RETRYABLE_STATUSES,
    RetryLater,
    describe,
    error_for_exception,
    error_for_status,
    is_temporary,
    retry_after_seconds,
)
from regfs.registry.guard import (
    SPONSOR,
    Chain,
    GuardedTransport,
    Resolve,
    TargetRefused,
    resolve,
)
from regfs.registry.host_stats import SILENT_PROBE, UNREACHABLE_RECHECK, HostStats
from regfs.registry.retry_policy import MAX_ATTEMPTS, Deadline, Progress, SharedLink, backoff

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 << 10  # an error body is only shown as an excerpt
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
T = TypeVar("T")


@dataclass(slots=True)
class _Asking:
    """The request a task is sending: its host's record, and the scope of its probe."""

    stats: HostStats
    probe: trio.CancelScope


_ASKING: ContextVar[_Asking | None] = ContextVar("regfs_asking", default=None)
"""Set around each request, for the response hook (called in the task that sends)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL
    """Where the body came from in the end (after redirects)."""


class HttpSession:
    """One httpx client for every registry, CDN and token realm a mount talks to."""

    def __init__(
        self,
        timeout: float,
        user_agent: str,
        credentials: CredentialProvider,
        transport: httpx.AsyncBaseTransport,
        *,
        allowed_targets: frozenset[str] = frozenset(),
        resolver: Resolve = resolve,
    ) -> None:
        """``allowed_targets``: hosts a registry may send regfs to whatever their address
        (``addresses.allowed_hosts`` form); ``resolver``: DNS for the targets it checks."""
        self.timeout = timeout
        self.hosts: dict[str, HostStats] = {}
        """Requests and the last failure, by host[:port] asked."""
        self.link = SharedLink()
        """The bodies being received at once, which share the machine's link."""
        self._http = httpx.AsyncClient(
            auth=RegistryAuth(credentials, self._exchange_token),
            follow_redirects=True,  # Authorization is dropped when leaving the origin
            timeout=httpx.Timeout(timeout),
            # identity: blob and manifest bytes are hashed as sent, and a Range counts bytes
            # of the blob itself, never of a re-encoding a CDN or proxy chose to apply.
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            transport=GuardedTransport(transport, allowed_targets, resolver),
            event_hooks={"response": [self._answered]},
        )

    async def _answered(self, response: httpx.Response) -> None:
        """The host began an answer (each of a redirect's too): it is not silent, and a
        probe's limit is lifted, for its body has the request's whole deadline. Found
        through the task's request, not the response's host name, which httpx spells its
        own way (lower case, no default port)."""
        asking = _ASKING.get()
        if asking is not None:
            asking.stats.answered_at, asking.stats.silent_at = trio.current_time(), None
            asking.probe.deadline = math.inf

    async def aclose(self) -> None:
        await self._http.aclose()

    def deadline(self, what: str, *, moving: bool = False) -> Deadline:
        """``--timeout`` for a call (``moving``: without progress, for blob bodies)."""
        return Deadline(self.timeout, what, moving=moving)

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        max_bytes: int,
        *,
        decoded: bool = False,
        content: bytes | None = None,
        sponsor: str | None = None,
        attempts: int = MAX_ATTEMPTS,
        paced: bool = False,
    ) -> Response:
        """One request (with ``content`` as its body, if any), the answer's body read whole,
        with retries for temporary failures.

        The body is the bytes as sent (blobs and manifests are hashed), or for listings
        ``decoded`` from any ``Content-Encoding``. ``sponsor``: a URL of the registry whose
        answer named ``url`` (a foreign layer's, an upload's location); by default ``url``
        is the registry's own, chosen by regfs. ``attempts``: as the place allows.
        ``paced``: the body is progress (``Progress``), for a blob of megabytes (a zTOC)
        that a slow link brings in more than ``timeout``.
        """
        what = f"{method} {url}"
        return await self._retrying(
            what,
            lambda: self._send_once(
                method, url, headers, max_bytes, decoded=decoded, content=content,
                sponsor=sponsor or url,
                progress=Progress(self.timeout, what, link=self.link) if paced else None,
            ),
            attempts,
        )  # fmt: skip

    async def open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        sponsor: str | None = None,
        attempts: int = MAX_ATTEMPTS,
    ) -> httpx.Response:
        """A 2xx response whose body is still to be read (the caller closes it);
        ``sponsor`` and ``attempts`` as for ``send``."""
        return await self._retrying(
            f"{method} {url}", lambda: self._open_once(method, url, headers, sponsor or url),
            attempts,
        )  # fmt: skip

    async def probe(self, url: str) -> int:
        """The status ``url`` answers a GET with, without credentials nor redirects, its
        body unread; once, in ``timeout``; httpx's error if it cannot be asked
        (``registry/schemes.py``: which scheme an insecure registry speaks)."""
        request = self._http.build_request("GET", url, extensions=_sponsored(url))
        with self.deadline(f"GET {url}"):
            response = await self._http.send(
                request, auth=None, follow_redirects=False, stream=True
            )
            await response.aclose()
        return response.status_code

    async def get_range(
        self, url: str, start: int, end: int, *, sponsor: str | None, attempts: int
    ) -> bytes:
        """Bytes ``[start, end)`` of the blob at ``url`` (``registry/bodies.py``); an answer
        whose body broke off or came short is asked for again, as any temporary failure.
        Its body is progress (``Progress``): a few megabytes on a slow link may take
        longer than ``timeout`` while each ``timeout`` brings some."""
        what = f"GET {url}"

        async def once() -> bytes:
            ranged = {"Range": f"bytes={start}-{end - 1}"}
            response = await self._open_once("GET", url, ranged, sponsor or url)
            progress = Progress(self.timeout, what, link=self.link, expected=end - start)
            return await read_range(response, start, end, what, progress)

        return await self._retrying(what, once, attempts)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]], attempts: int) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or ``attempts`` are used up;
        count it in ``hosts`` (what ``regfs status`` shows). A host that let a request's
        deadline pass without answering anything is given ``SILENT_PROBE`` for a while."""
        host = urlsplit(what.partition(" ")[2]).netloc
        stats = self.hosts.setdefault(host, HostStats())
        stats.requests += 1
        sent = trio.current_time()
        noticed = stats.unreachable_at
        if noticed is not None and sent - noticed < UNREACHABLE_RECHECK:
            attempts = 1
        silent = stats.silent_at is not None and sent - stats.silent_at < UNREACHABLE_RECHECK
        try:
            with trio.move_on_after(SILENT_PROBE if silent else math.inf) as probe:
                asking = _ASKING.set(_Asking(stats, probe))
                try:
                    return await self._answer_in_time(what, attempt, attempts, stats, silent)
                finally:
                    _ASKING.reset(asking)
            raise Unavailable(  # one message for the outage: said once (fuse/errors.py)
                f"{host} answered nothing in {stats.silent_for:g}s, nor in "
                f"{SILENT_PROBE:g}s a request since"
            )
        except NotFound:
            raise  # an answer, not a failure: tags and referrers are looked for all the time
        except RegfsError as error:
            stats.last_error, stats.last_error_at = str(error), time.time()
            raise

    async def _answer_in_time(
        self, what: str, attempt: Callable[[], Awaitable[T]], attempts: int, stats: HostStats,
        silent: bool,
    ) -> T:  # fmt: skip
        """``_attempts``, noting a host found silent (``SILENT_PROBE``) when the deadline
        passes: a probe of a silent host that got nothing keeps it silent. The caller's
        own cancel is not the host's silence, nor is a deadline too near to tell."""
        sent = trio.current_time()
        deadline = trio.current_effective_deadline()
        try:
            return await self._attempts(what, attempt, attempts, stats)
        except trio.Cancelled:
            ended = trio.current_time()
            long_enough = silent or ended - sent >= self.timeout / 2
            if ended >= deadline and long_enough and stats.answered_at < sent:
                stats.silent_at = ended
                if not silent:
                    stats.silent_for = round(ended - sent, 1)
            raise

    async def _attempts(
        self, what: str, attempt: Callable[[], Awaitable[T]], attempts: int, stats: HostStats
    ) -> T:
        for number in range(1, attempts + 1):
            delay = backoff(number)
            try:
                answer = await attempt()
                stats.unreachable_at = None
                return answer
            except TargetRefused as refused:  # said here, with the request it ends
                raise AccessDenied(f"{what}: {refused}") from None
            except HTTPX_ERRORS as error:
                if number == attempts or not is_temporary(error) or _past_deadline(delay):
                    if isinstance(error, CONNECT_ERRORS):
                        stats.unreachable_at = trio.current_time()
                    raise error_for_exception(error, what) from None
                log.debug("%s: %s; retrying in %.2fs", what, describe(error), delay)
            except RetryLater as temporary:
                stats.unreachable_at = None  # it answered
                retry_after = retry_after_seconds(temporary.retry_after, self.timeout, time.time())
                delay = retry_after if retry_after is not None else delay
                if number == attempts or (temporary.once and number > 1):
                    raise temporary.error from None
                if _past_deadline(delay):
                    raise type(temporary.error)(
                        f"{temporary.error}; not asked again in {delay:g}s, past the deadline"
                    ) from None
                log.debug("%s; retrying in %.2fs", temporary.error, delay)
            except RegfsError:
                stats.unreachable_at = None  # an answer that says no (401, 404, a bad body)
                raise
            await trio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _exchange_token(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        """Send a token request (outside the auth flow) and read a bounded answer."""
        request.headers.setdefault("User-Agent", self._http.headers["User-Agent"])
        request.extensions["timeout"] = self._http.timeout.as_dict()  # as build_request sets
        response = await self._http.send(request, auth=None, stream=True)
        try:
            success = 200 <= response.status_code < 300
            limit = MAX_TOKEN_RESPONSE if success else MAX_ERROR_BODY
            body = await read_limited(response, limit, truncate=not success, decoded=True)
        finally:
            await response.aclose()
        return response, body

    def _failure(self, response: httpx.Response, body: bytes, what: str) -> Exception:
        status = response.status_code
        if status in (401, 403):  # say which credentials were refused, never what they are
            what += f" with {response.request.extensions.get(CREDENTIALS_SOURCE, ANONYMOUS)}"
        redirected = any(earlier.is_redirect for earlier in response.history)  # not auth
        if redirected:
            what += f" (redirected to {response.url.host})"  # the host only: URLs carry signatures
        error = error_for_status(status, body, what)
        if status in RETRYABLE_STATUSES:
            return RetryLater(error, response.headers.get("retry-after"))
        if status == 403 and redirected:
            # A signed URL (S3, a CDN) that expired: the registry signs a new one when asked
            # again, so once is worth it; a second refusal is a real one.
            return RetryLater(error, "0", once=True)
        return error

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        max_bytes: int,
        *,
        decoded: bool,
        content: bytes | None,
        sponsor: str,
        progress: Progress | None,
    ) -> Response:
        extensions = _sponsored(sponsor)
        async with self._http.stream(
            method, url, headers=headers, content=content, extensions=extensions
        ) as response:
            success = 200 <= response.status_code < 300
            limit = max_bytes if success else MAX_ERROR_BODY
            body = await read_limited(
                response, limit, truncate=not success, decoded=decoded, progress=progress
            )
            if not success:
                raise self._failure(response, body, f"{method} {url}")
            return Response(response.status_code, response.headers, body, response.url)

    async def _open_once(
        self, method: str, url: str, headers: dict[str, str], sponsor: str
    ) -> httpx.Response:
        extensions = _sponsored(sponsor)
        request = self._http.build_request(method, url, headers=headers, extensions=extensions)
        response = await self._http.send(request, stream=True)
        if 200 <= response.status_code < 300:
            return response
        try:
            body = await read_limited(response, MAX_ERROR_BODY, truncate=True, decoded=False)
        finally:
            await response.aclose()
        raise self._failure(response, body, f"{method} {url}")


def _past_deadline(delay: float) -> bool:
    """Whether a wait of ``delay`` seconds would end after the caller's deadline: then the
    failure is said now (a 429's own message: a rate limit, say), not hidden behind "no
    answer within" when the deadline passes during the wait."""
    return trio.current_time() + delay >= trio.current_effective_deadline()


def _sponsored(url: str) -> dict[str, Chain]:
    """The extensions that name the registry at ``url`` as a request's sponsor."""
    return {SPONSOR: Chain(httpx.URL(url).netloc.decode("ascii"))}
