"""The registry HTTP client: catalog, tags, manifests and blobs, with deadlines and retries.

Registry layer: the only module that sends HTTP. Callers get bytes and domain types back,
or a domain error (``regfs.domain.errors``); never an httpx exception.

Every public call runs under one deadline (``timeout``) that covers its retries: temporary
failures (connection errors, resets, 5xx, 429 with ``Retry-After``) are retried with
exponential backoff and jitter until the deadline or ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
import trio

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, ProtocolError, RegfsError, Unavailable
from regfs.domain.manifest import manifest_digest
from regfs.domain.reference import is_repository
from regfs.registry import endpoints, listings
from regfs.registry.auth import ANONYMOUS, CREDENTIALS_SOURCE, RegistryAuth
from regfs.registry.credentials import Anonymous, CredentialProvider
from regfs.registry.errors import (
    HTTPX_ERRORS,
    RETRYABLE_STATUSES,
    describe,
    error_for_exception,
    error_for_status,
    is_temporary,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
FIRST_BACKOFF = 0.25
MAX_MANIFEST_BYTES = 4 << 20  # distribution refuses to store larger manifests
MAX_LISTING_PAGE_BYTES = 32 << 20
MAX_LISTING_PAGES = 100_000
MAX_ERROR_BODY = 64 << 10  # an error body is only shown as an excerpt
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    timeout: float = 30.0
    """Seconds one public call (with its retries) may take before it fails."""
    insecure_hosts: frozenset[str] = frozenset()
    """Hosts spoken to over plain http (loopback always is)."""
    user_agent: str = "regfs"


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest
    """The digest of ``raw`` as the registry computes it (checked against the header)."""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL


def _host_url(host: str, insecure_hosts: Collection[str], path: str) -> str:
    return endpoints.base_url(host, insecure_hosts) + path


class RegistryClient:
    """Reads from any number of registries; one instance is shared by the whole mount."""

    def __init__(
        self,
        config: ClientConfig,
        credentials: CredentialProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            auth=RegistryAuth(credentials or Anonymous()),
            follow_redirects=True,
            timeout=httpx.Timeout(config.timeout),
            # identity: blob and manifest bytes are hashed as sent, and a Range counts bytes
            # of the blob itself, never of a re-encoding a CDN or proxy chose to apply.
            headers={"User-Agent": config.user_agent, "Accept-Encoding": "identity"},
            verify=ssl.create_default_context(),  # the system trust store, as docker uses
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- listings -----------------------------------------------------------------------

    async def list_repositories(self, host: str) -> list[str]:
        """Every valid repository name ``/v2/_catalog`` offers, following ``Link`` across
        pages; names outside the distribution grammar are skipped with a log line."""
        names = await self._paginate(host, endpoints.CATALOG_PATH, "repositories")
        return listings.valid_names(names, is_repository, f"{host}: {endpoints.CATALOG_PATH}")

    async def list_tags(self, host: str, repository: str) -> list[str]:
        """Every valid tag of ``repository`` from ``tags/list``, following ``Link`` across
        pages; invalid tags, and tags that would pass for digest dirs, are skipped."""
        path = endpoints.tags_path(host, repository)
        tags = await self._paginate(host, path, "tags")
        return listings.valid_names(tags, listings.is_listable_tag, f"{host}: {path}")

    async def _paginate(self, host: str, path: str, key: str) -> list[str]:
        url: str | None = _host_url(host, self.config.insecure_hosts, path)
        items: list[str] = []
        seen: set[str] = set()
        with self._deadline(host, path):
            while url is not None:
                if url in seen or len(seen) >= MAX_LISTING_PAGES:
                    raise ProtocolError(f"{host}: {path}: pagination loops at {url}")
                seen.add(url)
                response = await self._send("GET", url, {}, MAX_LISTING_PAGE_BYTES, decoded=True)
                items.extend(listings.string_list(response.body, key, f"{host}: {path}"))
                links = response.headers.get_list("link")
                url = listings.next_page(links, str(response.url), f"{host}: {path}")
        return items

    # -- manifests ----------------------------------------------------------------------

    async def resolve_tag(self, host: str, repository: str, tag: str) -> Digest:
        """The digest ``tag`` points to now: a HEAD, or a GET if the header is missing."""
        path = endpoints.manifest_path(host, repository, tag)
        url = _host_url(host, self.config.insecure_hosts, path)
        with self._deadline(host, path):
            response = await self._send("HEAD", url, _MANIFEST_HEADERS, 0)
        header = response.headers.get("docker-content-digest")
        if header:
            return _header_digest(header, f"{host}: {path}")
        return (await self.get_manifest(host, repository, tag)).digest

    async def get_manifest(self, host: str, repository: str, reference: str) -> FetchedManifest:
        """The manifest's exact bytes, with the digest they hash to.

        By tag, the digest is checked against ``Docker-Content-Digest`` when present; by
        digest, the caller checks it against the one it asked for.
        """
        path = endpoints.manifest_path(host, repository, reference)
        url = _host_url(host, self.config.insecure_hosts, path)
        with self._deadline(host, path):
            response = await self._send("GET", url, _MANIFEST_HEADERS, MAX_MANIFEST_BYTES)
        content_type = response.headers.get("content-type", "")
        media_type = mediatypes.base_media_type(content_type)
        header = response.headers.get("docker-content-digest")
        algorithm = "sha256"
        if header:
            algorithm = _header_digest(header, f"{host}: {path}").algorithm
        name = f"{host}/{repository}{'@' if ':' in reference else ':'}{reference}"
        try:
            digest = manifest_digest(response.body, algorithm)
        except MalformedContent as error:
            raise MalformedContent(f"{name}: {error}") from None
        if header and str(digest) != header.strip():
            raise MalformedContent(
                f"{name}: manifest hashes to {digest}, but the registry says {header.strip()}"
            )
        return FetchedManifest(response.body, media_type, digest)

    # -- blobs --------------------------------------------------------------------------

    async def get_blob(self, host: str, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """A whole (small) blob, e.g. a config; the caller verifies it against ``digest``."""
        path = endpoints.blob_path(host, repository, str(digest))
        url = _host_url(host, self.config.insecure_hosts, path)
        with self._deadline(host, path):
            response = await self._send("GET", url, {}, max_bytes)
        return response.body

    async def get_blob_range(
        self, host: str, repository: str, digest: Digest, start: int, end: int
    ) -> bytes:
        """Bytes ``[start, end)`` of a blob, by an HTTP ``Range`` request."""
        path = endpoints.blob_path(host, repository, str(digest))
        url = _host_url(host, self.config.insecure_hosts, path)
        headers = {"Range": f"bytes={start}-{end - 1}"}
        with self._deadline(host, path):
            response = await self._send("GET", url, headers, end - start)
        if response.status != 206 and not (response.status == 200 and start == 0):
            raise ProtocolError(
                f"{host}: {path}: Range {start}-{end - 1} answered {response.status}"
            )
        if len(response.body) != end - start:
            raise Unavailable(
                f"{host}: {path}: Range {start}-{end - 1} returned {len(response.body)} bytes"
            )
        return response.body

    async def download_blob(
        self, host: str, repository: str, digest: Digest, sink: Callable[[bytes], None]
    ) -> None:
        """Stream a whole blob into ``sink``; the caller verifies what it received.

        Retries and the deadline cover getting an answer; the body may take as long as it
        needs, but each read must make progress within ``timeout``.
        """
        path = endpoints.blob_path(host, repository, str(digest))
        url = _host_url(host, self.config.insecure_hosts, path)
        with self._deadline(host, path):
            response = await self._retrying(f"GET {url}", lambda: self._open_once("GET", url, {}))
        received = 0
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        try:
            async with contextlib.aclosing(chunks) as stream:
                async for chunk in stream:
                    sink(chunk)
                    received += len(chunk)
        except HTTPX_ERRORS as error:
            raise error_for_exception(error, f"GET {url} after {received} bytes") from None
        finally:
            await response.aclose()

    # -- transport ----------------------------------------------------------------------

    def _deadline(self, host: str, path: str) -> _Deadline:
        return _Deadline(self.config.timeout, f"{host}: {path}")

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        max_bytes: int,
        decoded: bool = False,
    ) -> _Response:
        """One request, body read whole, with retries for temporary failures.

        The body is the bytes as sent (blobs and manifests are hashed), or for listings
        ``decoded`` from any ``Content-Encoding``.
        """
        return await self._retrying(
            f"{method} {url}", lambda: self._send_once(method, url, headers, max_bytes, decoded)
        )

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or ``MAX_ATTEMPTS`` is reached."""
        for number in range(1, MAX_ATTEMPTS + 1):
            delay = FIRST_BACKOFF * 2 ** (number - 1) * (0.5 + random.random())
            try:
                return await attempt()
            except HTTPX_ERRORS as error:
                if number == MAX_ATTEMPTS or not is_temporary(error):
                    raise error_for_exception(error, what) from None
                log.debug("%s: %s; retrying in %.2fs", what, describe(error), delay)
            except _TemporaryStatus as temporary:
                if number == MAX_ATTEMPTS:
                    raise temporary.error from None
                delay = temporary.retry_after if temporary.retry_after is not None else delay
                log.debug("%s; retrying in %.2fs", temporary.error, delay)
            await trio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _failure(self, response: httpx.Response, body: bytes, what: str) -> Exception:
        status = response.status_code
        if status in (401, 403):  # say which credentials were refused, never what they are
            what += f" with {response.request.extensions.get(CREDENTIALS_SOURCE, ANONYMOUS)}"
        error = error_for_status(status, body, what)
        if status in RETRYABLE_STATUSES:
            retry_after = retry_after_seconds(
                response.headers.get("retry-after"), self.config.timeout
            )
            return _TemporaryStatus(error, retry_after)
        return error

    async def _send_once(
        self, method: str, url: str, headers: dict[str, str], max_bytes: int, decoded: bool
    ) -> _Response:
        async with self._http.stream(method, url, headers=headers) as response:
            success = 200 <= response.status_code < 300
            limit = max_bytes if success else MAX_ERROR_BODY
            body = await _read_limited(response, limit, truncate=not success, decoded=decoded)
            if not success:
                raise self._failure(response, body, f"{method} {url}")
            return _Response(response.status_code, response.headers, body, response.url)

    async def _open_once(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        """A response whose 2xx body is still to be read (the caller closes it)."""
        request = self._http.build_request(method, url, headers=headers)
        response = await self._http.send(request, stream=True)
        if 200 <= response.status_code < 300:
            return response
        try:
            body = await _read_limited(response, MAX_ERROR_BODY, truncate=True, decoded=False)
        finally:
            await response.aclose()
        raise self._failure(response, body, f"{method} {url}")


class _TemporaryStatus(Exception):
    """A status worth retrying (5xx, 429, 408), carrying the error to raise if not."""

    def __init__(self, error: RegfsError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


async def _read_limited(
    response: httpx.Response, limit: int, truncate: bool, decoded: bool
) -> bytes:
    """The body (as sent, or ``decoded``), up to ``limit`` bytes: cut there (``truncate``)
    or refused beyond it, if possible before reading any of it."""
    what = f"{response.request.method} {response.request.url}"
    declared = response.headers.get("content-length", "")
    has_body = response.request.method != "HEAD"  # a HEAD's length is the GET's
    if has_body and not truncate and declared.isdigit() and int(declared) > limit:
        raise MalformedContent(f"{what}: response of {declared} bytes, more than {limit}")
    body = bytearray()
    # Closed explicitly: leaving the loop early must not leave the generator to the GC.
    chunks = response.aiter_bytes() if decoded else response.aiter_raw()
    async with contextlib.aclosing(cast(AsyncGenerator[bytes, None], chunks)) as stream:
        async for chunk in stream:
            body += chunk
            if len(body) <= limit:
                continue
            if truncate:
                return bytes(body[:limit])
            raise MalformedContent(f"{what}: response larger than {limit} bytes")
    return bytes(body)


class _Deadline:
    """A trio deadline whose expiry becomes ``Unavailable`` naming what timed out."""

    def __init__(self, seconds: float, what: str) -> None:
        self._scope = trio.move_on_after(seconds)
        self._seconds = seconds
        self._what = what

    def __enter__(self) -> None:
        self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        suppressed = self._scope.__exit__(*exc_info)
        if self._scope.cancelled_caught:
            raise Unavailable(f"{self._what}: no answer within {self._seconds:g}s")
        return bool(suppressed)


_MANIFEST_HEADERS = {"Accept": mediatypes.MANIFEST_ACCEPT}


def _header_digest(value: str, what: str) -> Digest:
    try:
        return Digest.parse(value.strip())
    except RegfsError:
        raise ProtocolError(f"{what}: bad Docker-Content-Digest {value[:100]!r}") from None
