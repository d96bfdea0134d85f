"""The registry client: catalog, tags, manifests and blobs, from wherever they may come.

Registry layer. Callers name what a user sees (``docker.io``, ``library/debian``) and get
bytes and domain types back, or a domain error (``regfs.domain.errors``); never an httpx
exception. registries.conf decides where a pull goes: its mirrors first (as their
``pull-from-mirror`` allows), then the registry's own, possibly rewritten, location; a
mirror that fails or lacks the content hands over to the next. Each attempt at one place
runs under one deadline (``timeout``) that covers its retries (``registry/http.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import trio

from regfs.domain import mediatypes
from regfs.domain.deadline import CALLER_DEADLINE
from regfs.domain.digest import Digest
from regfs.domain.errors import (
    AccessDenied,
    MalformedContent,
    NotFound,
    ProtocolError,
    RegfsError,
    Unavailable,
)
from regfs.domain.manifest import Descriptor, ImageIndex, manifest_digest, parse_manifest
from regfs.domain.reference import api_host, is_repository
from regfs.domain.soci import referrers_tag
from regfs.registry import endpoints, listings
from regfs.registry.addresses import allowed_hosts
from regfs.registry.credentials import Anonymous, CredentialProvider
from regfs.registry.errors import HTTPX_ERRORS, error_for_exception
from regfs.registry.guard import Resolve, resolve
from regfs.registry.http import ATTEMPTS, HostStats, HttpSession, consume_raw, read_limited
from regfs.registry.registries_conf import Endpoint, RegistriesConf
from regfs.registry.tls import PerHostTransport, TlsSettings

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20  # distribution refuses to store larger manifests
MAX_WRITE_ANSWER_BYTES = 1 << 20
"""Body accepted in answer to an upload (registries send none, or a short JSON)."""
MAX_LISTING_PAGE_BYTES = 32 << 20
MAX_LISTING_BYTES = 64 << 20
"""All pages of one listing together (about a million names): beyond, the listing fails
rather than hold an unbounded list in memory."""
MAX_LISTING_PAGES = 100_000
MIRROR_REST = 30.0
MIN_PROGRESS = 64 << 10
"""Bytes a blob download must bring every ``timeout`` seconds."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    timeout: float = 30.0
    """Seconds one attempt at one place (with its retries) may take before it fails."""
    insecure_hosts: frozenset[str] = frozenset()
    """Hosts spoken to over plain http (loopback always is; registries.conf adds more)."""
    redirect_hosts: frozenset[str] = frozenset()
    """Hosts a registry may send regfs to whatever their address (``--allow-redirect-to``;
    insecure hosts are too): redirects, foreign layers' URLs, token realms."""
    registries: RegistriesConf = field(default_factory=RegistriesConf)
    tls: TlsSettings = field(default_factory=lambda: TlsSettings([]))
    aliases: dict[str, str] = field(default_factory=dict)
    """Names that stand for a base URL with a path prefix (``registry/aliases.py``)."""
    user_agent: str = "regfs"


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest
    """The digest of ``raw`` as the registry computes it (checked against the header)."""


class RegistryClient:
    """Reads from any number of registries; one instance is shared by the whole mount."""

    def __init__(
        self,
        config: ClientConfig,
        credentials: CredentialProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolve = resolve,
    ) -> None:
        self.config = config
        self._plain_http = config.insecure_hosts | config.registries.insecure_hosts()
        self._session = HttpSession(
            config.timeout,
            config.user_agent,
            credentials or Anonymous(),
            transport or PerHostTransport(config.tls),
            allowed_targets=allowed_hosts(config.redirect_hosts | self._plain_http),
            resolver=resolver,
        )
        self._mirror_rests: dict[str, float] = {}
        """Mirrors found unreachable, with the time until which they are skipped."""

    async def aclose(self) -> None:
        await self._session.aclose()

    def hosts(self) -> dict[str, HostStats]:
        """Requests sent and the last failure, by host[:port] asked."""
        return dict(self._session.hosts)

    def _url(self, host: str, path: str) -> str:
        """https, unless the host may speak plain http and has no TLS set up in certs.d;
        an alias's own base URL, prefix included."""
        if host in self.config.aliases:
            return self.config.aliases[host] + path
        if self.config.tls.host_dir(api_host(host)) is not None:
            return f"https://{api_host(host)}{path}"
        return endpoints.base_url(host, self._plain_http) + path

    def _endpoints(self, host: str, repository: str, *, by_digest: bool) -> list[Endpoint]:
        if host in self.config.aliases:
            return [Endpoint(host, repository)]  # an alias is its own, exact place
        found = self.config.registries.endpoints(host, repository, by_digest=by_digest)
        if not found:
            sources = ", ".join(self.config.registries.sources)
            raise AccessDenied(f"{host}/{repository}: blocked in {sources}")
        return found

    async def _pull(
        self,
        host: str,
        repository: str,
        attempt: Callable[[Endpoint], Awaitable[T]],
        *,
        by_digest: bool,
    ) -> T:
        """``attempt`` at each place in turn: a mirror's failure hands over to the next.

        A mirror that is unreachable is left alone for ``MIRROR_REST`` seconds, so a fleet
        whose cache went down pays its connection timeouts once, not on every read. A
        mirror gets at most half of what is left of the request's deadline, so a stalled
        one still leaves the registry time to answer within it.
        """
        places = self._endpoints(host, repository, by_digest=by_digest)
        for place in places[:-1]:
            if self._mirror_rests.get(place.host, 0.0) > trio.current_time():
                continue
            asking_a_mirror = ATTEMPTS.set(1)  # no retries: the next place is the retry
            now = trio.current_time()  # and at most half the request's time left
            halved = CALLER_DEADLINE.set(now + (CALLER_DEADLINE.get() - now) / 2)
            try:
                return await attempt(place)
            except RegfsError as error:
                if isinstance(error, Unavailable):
                    self._mirror_rests[place.host] = trio.current_time() + MIRROR_REST
                log.info(
                    "%s/%s: mirror %s: %s; trying the next", host, repository, place.host, error
                )
            finally:
                CALLER_DEADLINE.reset(halved)
                ATTEMPTS.reset(asking_a_mirror)
        return await attempt(places[-1])

    # -- listings -----------------------------------------------------------------------

    async def list_repositories(self, host: str) -> list[str]:
        """Every valid repository name ``/v2/_catalog`` offers, following ``Link`` across
        pages; names outside the distribution grammar are skipped with a log line."""
        place = self._endpoints(host, "", by_digest=False)[-1]
        if place.repository:
            raise NotFound(f"{host}: no catalog: registries.conf maps it below {place.host}")
        names = await self._paginate(place.host, endpoints.CATALOG_PATH, "repositories")
        return listings.valid_names(names, is_repository, f"{host}: {endpoints.CATALOG_PATH}")

    async def list_tags(self, host: str, repository: str) -> list[str]:
        """Every valid tag of ``repository`` from ``tags/list``, following ``Link`` across
        pages; invalid tags, and tags that would pass for digest dirs, are skipped."""

        async def at(place: Endpoint) -> list[str]:
            path = endpoints.tags_path(place.host, place.repository)
            tags = listings.without_referrer_tags(await self._paginate(place.host, path, "tags"))
            return listings.valid_names(tags, listings.is_listable_tag, f"{place.host}: {path}")

        return await self._pull(host, repository, at, by_digest=False)

    async def _paginate(self, host: str, path: str, key: str) -> list[str]:
        url: str | None = self._url(host, path)
        items: list[str] = []
        seen: set[str] = set()
        received = 0
        with self._session.deadline(f"{host}: {path}"):
            while url is not None:
                if url in seen or len(seen) >= MAX_LISTING_PAGES:
                    raise ProtocolError(f"{host}: {path}: pagination loops at {url}")
                seen.add(url)
                response = await self._session.send(
                    "GET", url, {}, MAX_LISTING_PAGE_BYTES, decoded=True
                )
                received += len(response.body)
                if received > MAX_LISTING_BYTES:
                    raise MalformedContent(
                        f"{host}: {path}: listing larger than {MAX_LISTING_BYTES >> 20} MiB"
                    )
                items.extend(listings.string_list(response.body, key, f"{host}: {path}"))
                links = response.headers.get_list("link")
                url = listings.next_page(links, str(response.url), f"{host}: {path}")
        return items

    # -- manifests ----------------------------------------------------------------------

    async def resolve_tag(self, host: str, repository: str, tag: str) -> Digest:
        """The digest ``tag`` points to now: a HEAD, or a GET if the header is missing."""

        async def at(place: Endpoint) -> Digest:
            path = endpoints.manifest_path(place.host, place.repository, tag)
            with self._session.deadline(f"{place.host}: {path}"):
                response = await self._session.send(
                    "HEAD", self._url(place.host, path), _MANIFEST_HEADERS, 0
                )
            header = response.headers.get("docker-content-digest")
            if header:
                return _header_digest(header, f"{place.host}: {path}")
            return (await self._manifest_at(place, tag)).digest

        return await self._pull(host, repository, at, by_digest=False)

    async def get_manifest(self, host: str, repository: str, reference: str) -> FetchedManifest:
        """The manifest's exact bytes, with the digest they hash to.

        By tag, the digest is checked against ``Docker-Content-Digest`` when present; by
        digest, the caller checks it against the one it asked for.
        """
        return await self._pull(
            host,
            repository,
            lambda place: self._manifest_at(place, reference),
            by_digest=":" in reference,
        )

    async def _manifest_at(self, place: Endpoint, reference: str) -> FetchedManifest:
        path = endpoints.manifest_path(place.host, place.repository, reference)
        with self._session.deadline(f"{place.host}: {path}"):
            response = await self._session.send(
                "GET", self._url(place.host, path), _MANIFEST_HEADERS, MAX_MANIFEST_BYTES
            )
        content_type = response.headers.get("content-type", "")
        header = response.headers.get("docker-content-digest")
        algorithm = "sha256"
        if header:
            algorithm = _header_digest(header, f"{place.host}: {path}").algorithm
        name = f"{place.host}/{place.repository}{'@' if ':' in reference else ':'}{reference}"
        try:
            digest = manifest_digest(response.body, algorithm)
        except MalformedContent as error:
            raise MalformedContent(f"{name}: {error}") from None
        if header and str(digest) != header.strip():
            raise MalformedContent(
                f"{name}: manifest hashes to {digest}, but the registry says {header.strip()}"
            )
        return FetchedManifest(response.body, mediatypes.base_media_type(content_type), digest)

    async def referrers(
        self, host: str, repository: str, digest: Digest, artifact_type: str
    ) -> ImageIndex | None:
        """The manifests that name ``digest`` as their subject (those of ``artifact_type``
        if the registry filters): from the referrers API, every page of it, or where the
        registry lacks it, its fallback tag; None if there are none."""

        async def at(place: Endpoint) -> ImageIndex | None:
            path = endpoints.referrers_path(place.host, place.repository, str(digest))
            url = f"{self._url(place.host, path)}?{urlencode({'artifactType': artifact_type})}"
            what = f"{place.host}/{place.repository}: referrers of {digest}"
            try:
                return await self._referrer_pages(url, what)
            except NotFound:  # no referrers API (distribution 2.x): the fallback tag
                try:
                    fetched = await self._manifest_at(place, referrers_tag(digest))
                except NotFound:
                    return None
                return _referrers_index(fetched.raw, fetched.media_type, what)

        return await self._pull(host, repository, at, by_digest=True)

    async def _referrer_pages(self, url: str, what: str) -> ImageIndex:
        """The referrers API's answer, its pages (``Link: rel="next"``) joined."""
        manifests: list[Descriptor] = []
        seen: set[str] = set()
        next_url: str | None = url
        with self._session.deadline(what):
            while next_url is not None:
                if next_url in seen or len(seen) >= MAX_LISTING_PAGES:
                    raise ProtocolError(f"{what}: pagination loops at {next_url}")
                seen.add(next_url)
                response = await self._session.send(
                    "GET", next_url, {"Accept": mediatypes.OCI_INDEX}, MAX_MANIFEST_BYTES
                )
                content_type = response.headers.get("content-type", "")
                manifests += _referrers_index(response.body, content_type, what).manifests
                links = response.headers.get_list("link")
                next_url = listings.next_page(links, str(response.url), what)
        return ImageIndex(mediatypes.OCI_INDEX, tuple(manifests))

    # -- writing (regfs index push) -----------------------------------------------------

    async def send_to_origin(
        self,
        method: str,
        host: str,
        path_or_url: str,
        headers: dict[str, str],
        content: bytes | None = None,
    ) -> httpx.Headers:
        """A request to the registry itself (never a mirror), for writing; ``path_or_url``
        is an API path or a URL the registry gave (an upload's Location)."""
        place = self._endpoints(host, "", by_digest=False)[-1]
        url = path_or_url
        if path_or_url.startswith("/"):
            url = self._url(place.host, path_or_url)
        with self._session.deadline(f"{method} {place.host}: {urlsplit(url).path}"):
            response = await self._session.send(
                method, url, headers, MAX_WRITE_ANSWER_BYTES, content=content,
                sponsor=self._url(place.host, "/v2/"),
            )  # fmt: skip
        return response.headers

    # -- blobs --------------------------------------------------------------------------

    async def get_blob(self, host: str, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """A whole (small) blob, e.g. a config; the caller verifies it against ``digest``."""

        async def fetch(url: str, what: str, sponsor: str | None) -> bytes:
            with self._session.deadline(what):
                response = await self._session.send("GET", url, {}, max_bytes, sponsor=sponsor)
            return response.body

        return await self._pull_blob(host, repository, digest, (), fetch)

    async def blob_exists(
        self, host: str, repository: str, digest: Digest, *, urls: tuple[str, ...] = ()
    ) -> None:
        """Return if the registry serves the blob in ``repository`` (a HEAD); else raise
        ``NotFound`` or ``AccessDenied``, as a GET would."""

        async def fetch(url: str, what: str, sponsor: str | None) -> None:
            with self._session.deadline(what):
                await self._session.send("HEAD", url, {}, 0, sponsor=sponsor)

        await self._pull_blob(host, repository, digest, urls, fetch)

    async def get_blob_range(
        self,
        host: str,
        repository: str,
        digest: Digest,
        start: int,
        end: int,
        *,
        urls: tuple[str, ...] = (),
    ) -> bytes:
        """Bytes ``[start, end)`` of a blob, by an HTTP ``Range`` request.

        A server (or a CDN it redirects to) that ignores ``Range`` and sends the whole blob
        is read up to ``end`` and cut off there, never held whole in memory. ``urls``: a
        foreign layer's own, tried when the registry does not have the blob.
        """

        async def fetch(url: str, what: str, sponsor: str | None) -> bytes:
            with self._session.deadline(what):
                for attempt in range(1, ATTEMPTS.get() + 1):
                    try:
                        return await self._range_once(url, what, start, end, sponsor)
                    except _CutShort as error:  # the answer came, its body did not
                        if attempt == ATTEMPTS.get():
                            raise
                        log.debug("%s; asking again", error)
            raise AssertionError("unreachable: the last attempt returns or raises")

        return await self._pull_blob(host, repository, digest, urls, fetch)

    async def _range_once(
        self, url: str, what: str, start: int, end: int, sponsor: str | None
    ) -> bytes:
        """One Range request, answered (after the session's retries for a failing status),
        with its body read whole; a body cut short or broken off is ``_CutShort``."""
        ranged = {"Range": f"bytes={start}-{end - 1}"}
        response = await self._session.open("GET", url, ranged, sponsor=sponsor)
        try:
            if response.status_code == 206:
                _check_content_range(response, start, what)
                body = await read_limited(response, end - start, truncate=False, decoded=False)
            else:
                body = await _slice_of_whole_body(response, start, end, what)
        except HTTPX_ERRORS as error:
            mapped = error_for_exception(error, what)
            raise (_CutShort(str(mapped)) if isinstance(mapped, Unavailable) else mapped) from None
        except Unavailable as error:  # broken off while sliced from a whole body
            raise _CutShort(str(error)) from None
        finally:
            await response.aclose()
        if len(body) != end - start:
            raise _CutShort(f"{what}: Range {start}-{end - 1} returned {len(body)} bytes")
        return body

    async def download_blob(
        self,
        host: str,
        repository: str,
        digest: Digest,
        sink: BlobSink,
        *,
        urls: tuple[str, ...] = (),
    ) -> None:
        """Stream a whole blob into ``sink``; the caller verifies what it received.

        Retries and the deadline cover getting an answer; the body may take as long as it
        needs, but each read must make progress within ``timeout``. When a place fails
        midway, the sink is restarted and the next one sends the blob from its start.
        """

        async def fetch(url: str, what: str, sponsor: str | None) -> None:
            await sink.restart()
            with self._session.deadline(what):
                response = await self._session.open("GET", url, {}, sponsor=sponsor)
            progress = _Progress(self.config.timeout, what)

            async def consume(data: bytes) -> bool:
                progress.add(len(data))
                await sink.write(data)
                return True

            await consume_raw(response, f"GET {url}", consume)

        await self._pull_blob(host, repository, digest, urls, fetch)

    async def _pull_blob(
        self,
        host: str,
        repository: str,
        digest: Digest,
        urls: tuple[str, ...],
        fetch: Callable[[str, str, str | None], Awaitable[T]],
    ) -> T:
        """``fetch(url, what, sponsor)`` from the registry's places, then, if none has the
        blob, from the layer's own ``urls`` (foreign layers; http and https only), which go
        for the registry (the ``sponsor``: its manifest named them)."""

        async def at(place: Endpoint) -> T:
            path = endpoints.blob_path(place.host, place.repository, str(digest))
            return await fetch(self._url(place.host, path), f"{place.host}: {path}", None)

        foreign = [url for url in urls if urlsplit(url).scheme in ("http", "https")]
        try:
            return await self._pull(host, repository, at, by_digest=True)
        except NotFound:
            if not foreign:
                raise
        registry = self._url(self._endpoints(host, repository, by_digest=True)[-1].host, "/v2/")
        for url in foreign[:-1]:
            try:
                return await fetch(url, f"{host}/{repository}@{digest} from {url}", registry)
            except RegfsError as error:
                log.info("%s/%s@%s: %s; trying the next URL", host, repository, digest, error)
        what = f"{host}/{repository}@{digest} from {foreign[-1]}"
        return await fetch(foreign[-1], what, registry)


class _CutShort(Unavailable):
    """A Range answer whose body broke off or came short: asked again, a few times."""


class BlobSink(Protocol):
    """Where ``download_blob`` puts a blob's bytes, in order, as they arrive."""

    async def write(self, data: bytes) -> None: ...

    async def restart(self) -> None:
        """Forget what was written: the next place sends the blob from its start."""


class _Progress:
    """Fails a body that trickles: each ``window`` seconds must bring ``MIN_PROGRESS`` bytes
    (a stall is httpx's read timeout; a byte a second would otherwise never end)."""

    def __init__(self, window: float, what: str) -> None:
        self._window = window
        self._what = what
        self._start = trio.current_time()
        self._bytes = 0

    def add(self, size: int) -> None:
        self._bytes += size
        now = trio.current_time()
        if now - self._start < self._window:
            return
        if self._bytes < MIN_PROGRESS:
            raise Unavailable(
                f"{self._what}: {self._bytes} bytes in {now - self._start:.0f}s: too slow"
            )
        self._start, self._bytes = now, 0


_MANIFEST_HEADERS = {"Accept": mediatypes.MANIFEST_ACCEPT}


def _referrers_index(raw: bytes, content_type: str, what: str) -> ImageIndex:
    listing = parse_manifest(raw, content_type)
    if not isinstance(listing, ImageIndex):
        raise MalformedContent(f"{what}: not an image index")
    return listing


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _check_content_range(response: httpx.Response, start: int, what: str) -> None:
    """A 206 must be the range asked for: bytes from another offset would pass as ours."""
    header = response.headers.get("content-range")
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if header is not None and (match is None or int(match.group(1)) != start):
        raise ProtocolError(f"{what}: asked for bytes from {start}, got {header[:100]!r}")


async def _slice_of_whole_body(response: httpx.Response, start: int, end: int, what: str) -> bytes:
    """``[start, end)`` of a 200 answer carrying the whole blob, read only as far as needed."""
    if response.status_code != 200:  # the caller closes the response
        raise ProtocolError(f"{what}: Range {start}-{end - 1} answered {response.status_code}")
    wanted = bytearray()
    position = 0

    async def consume(data: bytes) -> bool:
        nonlocal position
        chunk_start, position = position, position + len(data)
        if position > start:
            wanted.extend(data[max(0, start - chunk_start) : end - chunk_start])
        return position < end

    await consume_raw(response, what, consume)
    return bytes(wanted[: end - start])


def _header_digest(value: str, what: str) -> Digest:
    try:
        return Digest.parse(value.strip())
    except RegfsError:
        raise ProtocolError(f"{what}: bad Docker-Content-Digest {value[:100]!r}") from None
