"""The registry client: catalog, tags, manifests and blobs, from wherever they may come.

Registry layer. Callers name what a user sees (``docker.io``, ``library/debian``) and get
bytes and domain types back, or a domain error (``regfs.domain.errors``); never an httpx
exception. Where each request goes, mirrors first, is ``registry/places.py``'s to say;
each call at one place runs under one deadline (``timeout``) that covers its retries
(``registry/http.py``, the only place a request is sent again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

from regfs.domain import mediatypes
from regfs.domain.artifacts import referrers_tag
from regfs.domain.digest import Digest
from regfs.domain.errors import (
    AccessDenied,
    MalformedContent,
    NotFound,
    ProtocolError,
    RegfsError,
)
from regfs.domain.manifest import Descriptor, ImageIndex, manifest_digest, parse_manifest
from regfs.domain.reference import is_repository
from regfs.registry import endpoints, listings
from regfs.registry.addresses import allowed_hosts
from regfs.registry.blob_stream import BlobSink, download, stream_range
from regfs.registry.bodies import Consumer
from regfs.registry.config import ClientConfig
from regfs.registry.credentials import Anonymous, CredentialProvider
from regfs.registry.errors import UnexpectedStatus
from regfs.registry.guard import Resolve, resolve
from regfs.registry.host_stats import HostStats
from regfs.registry.http import HttpSession, Response
from regfs.registry.pages import follow_pages
from regfs.registry.places import BlobSource, Places
from regfs.registry.registries_conf import Endpoint
from regfs.registry.request_deadline import progressed
from regfs.registry.tls import PerHostTransport

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20  # distribution refuses to store larger manifests
MAX_WRITE_ANSWER_BYTES = 1 << 20
"""Body accepted in answer to an upload (registries send none, or a short JSON)."""
MAX_LISTING_PAGE_BYTES = 32 << 20
MAX_LISTING_BYTES = 64 << 20
"""All pages of one listing together (about a million names): beyond, the listing fails
rather than hold an unbounded list in memory."""
T = TypeVar("T")


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
        self._refuse_head: set[str] = set()
        """Hosts that answered a manifest HEAD with a status that says nothing of the
        manifest: asked with a GET from then on, not a HEAD first each time."""
        self._places = Places(config, self._probe)
        self._session = HttpSession(
            config.timeout,
            config.user_agent,
            credentials or Anonymous(),
            transport or PerHostTransport(config.tls, self._places.insecure),
            allowed_targets=allowed_hosts(config.redirect_hosts | self._places.plain_http),
            resolver=resolver,
        )

    async def _probe(self, url: str) -> int:
        """Asks an insecure registry which scheme it speaks (the session is made after
        the places it needs)."""
        return await self._session.probe(url)

    async def aclose(self) -> None:
        await self._session.aclose()

    def has_mirrors(self, host: str, repository: str) -> bool:
        """Whether ``host/repository`` may be pulled from another place than its registry
        (a registries.conf mirror, if only by digest): while the registry is away, its
        images may still be read, though its catalog cannot."""
        try:
            return len(self._places.endpoints(host, repository, by_digest=True)) > 1
        except AccessDenied:
            return False

    def hosts(self) -> dict[str, HostStats]:
        """Requests sent and the last failure, by host[:port] asked."""
        return dict(self._session.hosts)

    # -- listings -----------------------------------------------------------------------

    async def list_repositories(self, host: str) -> list[str]:
        """Every valid repository name ``/v2/_catalog`` offers, following ``Link`` across
        pages; names outside the distribution grammar are skipped with a log line."""
        place = self._places.origin(host)
        if place.repository:
            raise NotFound(f"{host}: no catalog: registries.conf maps it below {place.host}")
        names = await self._paginate(place, endpoints.CATALOG_PATH, "repositories")
        return listings.valid_names(names, is_repository, f"{host}: {endpoints.CATALOG_PATH}")

    async def list_tags(self, host: str, repository: str) -> list[str]:
        """Every valid tag of ``repository`` from ``tags/list``, following ``Link`` across
        pages; invalid tags, and tags that would pass for digest dirs, are skipped."""

        async def at(place: Endpoint) -> list[str]:
            path = endpoints.tags_path(place.host, place.repository)
            tags = listings.without_referrer_tags(await self._paginate(place, path, "tags"))
            return listings.valid_names(tags, listings.is_listable_tag, f"{place.host}: {path}")

        return await self._places.pull(host, repository, at, by_digest=False)

    async def _paginate(self, place: Endpoint, path: str, key: str) -> list[str]:
        """Every page's items. Each page is progress (``progressed``): a catalog of many
        pages on a far link takes longer than ``--timeout`` while each comes in time
        (``pages.MAX_LISTING_PAGES`` and ``MAX_LISTING_BYTES`` bound the whole)."""
        host = place.host
        await self._places.ready(host)
        what = f"{host}: {path}"
        items: list[str] = []
        received = 0

        def take(response: Response) -> None:
            nonlocal received
            received += len(response.body)
            if received > MAX_LISTING_BYTES:
                raise MalformedContent(f"{what}: listing larger than {MAX_LISTING_BYTES >> 20} MiB")
            items.extend(listings.string_list(response.body, key, what))
            progressed()

        with self._session.deadline(what, moving=True):
            await follow_pages(self._session, self._places.url(host, path), what, take,
                               headers={}, max_bytes=MAX_LISTING_PAGE_BYTES, decoded=True,
                               attempts=place.attempts)  # fmt: skip
        return items

    # -- manifests ----------------------------------------------------------------------

    async def resolve_tag(self, host: str, repository: str, tag: str) -> Digest:
        """The digest ``tag`` points to now: a HEAD, or a GET if the header is missing."""

        async def at(place: Endpoint) -> Digest:
            headers = await self._head_manifest(place, tag)
            header = headers.get("docker-content-digest") if headers is not None else None
            if header:
                path = endpoints.manifest_path(place.host, place.repository, tag)
                return _header_digest(header, f"{place.host}: {path}")
            return (await self._manifest_at(place, tag)).digest

        return await self._places.pull(host, repository, at, by_digest=False)

    async def manifest_exists(self, host: str, repository: str, digest: Digest) -> None:
        """Return if the registry serves manifest ``digest`` in ``repository`` (a HEAD:
        a kept copy is confirmed without its bytes); else raise ``NotFound`` or
        ``AccessDenied``, as a GET would."""

        async def at(place: Endpoint) -> None:
            if await self._head_manifest(place, str(digest)) is None:
                await self._manifest_at(place, str(digest))

        await self._places.pull(host, repository, at, by_digest=True)

    async def _head_manifest(self, place: Endpoint, reference: str) -> httpx.Headers | None:
        """The headers of a HEAD of the manifest, or None where the registry (or a proxy
        before it) refuses HEAD itself (405, 400: some Artifactory and Nexus setups) while
        serving GET: the caller asks with a GET. A 404, 401 or 403 is the answer."""
        if place.host in self._refuse_head:
            return None
        path = endpoints.manifest_path(place.host, place.repository, reference)
        try:
            with self._session.deadline(f"{place.host}: {path}"):
                response = await self._session.send(
                    "HEAD", self._places.url(place.host, path), _MANIFEST_HEADERS, 0,
                    attempts=place.attempts,
                )  # fmt: skip
        except UnexpectedStatus as error:
            log.info("%s; asking %s with a GET from now on", error, place.host)
            self._refuse_head.add(place.host)
            return None
        return response.headers

    async def get_manifest(self, host: str, repository: str, reference: str) -> FetchedManifest:
        """The manifest's exact bytes, with the digest they hash to.

        By tag, the digest is checked against ``Docker-Content-Digest`` when present; by
        digest, the caller checks it against the one it asked for.
        """
        return await self._places.pull(
            host,
            repository,
            lambda place: self._manifest_at(place, reference),
            by_digest=":" in reference,
        )

    async def _manifest_at(self, place: Endpoint, reference: str) -> FetchedManifest:
        path = endpoints.manifest_path(place.host, place.repository, reference)
        with self._session.deadline(f"{place.host}: {path}"):
            response = await self._session.send(
                "GET", self._places.url(place.host, path), _MANIFEST_HEADERS, MAX_MANIFEST_BYTES,
                attempts=place.attempts,
            )  # fmt: skip
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
            url = (
                f"{self._places.url(place.host, path)}?{urlencode({'artifactType': artifact_type})}"
            )
            what = f"{place.host}/{place.repository}: referrers of {digest}"
            try:
                return await self._referrer_pages(url, what, place.attempts)
            except NotFound:  # no referrers API (distribution 2.x): the fallback tag
                try:
                    fetched = await self._manifest_at(place, referrers_tag(digest))
                except NotFound:
                    return None
                return _referrers_index(fetched.raw, fetched.media_type, what)

        return await self._places.pull(host, repository, at, by_digest=True)

    async def _referrer_pages(self, url: str, what: str, attempts: int) -> ImageIndex:
        """The referrers API's answer, its pages (``Link: rel="next"``) joined."""
        manifests: list[Descriptor] = []

        def take(response: Response) -> None:
            content_type = response.headers.get("content-type", "")
            manifests.extend(_referrers_index(response.body, content_type, what).manifests)

        with self._session.deadline(what):
            await follow_pages(self._session, url, what, take,
                               headers={"Accept": mediatypes.OCI_INDEX},
                               max_bytes=MAX_MANIFEST_BYTES, decoded=False,
                               attempts=attempts)  # fmt: skip
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
        place = self._places.origin(host)
        await self._places.ready(place.host)
        url = path_or_url
        if path_or_url.startswith("/"):
            url = self._places.url(place.host, path_or_url)
        with self._session.deadline(f"{method} {place.host}: {urlsplit(url).path}"):
            response = await self._session.send(
                method, url, headers, MAX_WRITE_ANSWER_BYTES, content=content,
                sponsor=self._places.url(place.host, "/v2/"),
            )  # fmt: skip
        return response.headers

    # -- blobs --------------------------------------------------------------------------

    async def get_blob(self, host: str, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """A whole blob held in memory (a config, a zTOC: megabytes at most, which a slow
        link may bring in more than ``--timeout``); the caller verifies it against
        ``digest``."""

        async def fetch(source: BlobSource) -> bytes:
            with self._session.deadline(source.what, moving=True):
                response = await self._session.send(
                    "GET", source.url, {}, max_bytes, sponsor=source.sponsor,
                    attempts=source.attempts, paced=True,
                )  # fmt: skip
            return response.body

        return await self._places.pull_blob(host, repository, digest, (), fetch)

    async def blob_exists(
        self, host: str, repository: str, digest: Digest, *, urls: tuple[str, ...] = ()
    ) -> None:
        """Return if the registry serves the blob in ``repository`` (a HEAD); else raise
        ``NotFound`` or ``AccessDenied``, as a GET would."""

        async def fetch(source: BlobSource) -> None:
            with self._session.deadline(source.what):
                await self._session.send(
                    "HEAD", source.url, {}, 0, sponsor=source.sponsor, attempts=source.attempts
                )

        await self._places.pull_blob(host, repository, digest, urls, fetch)

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
        """Bytes ``[start, end)`` of a blob, by an HTTP ``Range`` request
        (``registry/ranges.py``). ``urls``: a foreign layer's own, tried when the registry
        does not have the blob."""

        async def fetch(source: BlobSource) -> bytes:
            with self._session.deadline(source.what, moving=True):
                return await self._session.get_range(
                    source.url, start, end, sponsor=source.sponsor, attempts=source.attempts
                )

        return await self._places.pull_blob(host, repository, digest, urls, fetch)

    async def download_blob(
        self,
        host: str,
        repository: str,
        digest: Digest,
        sink: BlobSink,
        *,
        urls: tuple[str, ...] = (),
        resume_from: int = 0,
    ) -> None:
        """Stream a whole blob into ``sink`` (``registry/blob_stream.py``), or its bytes
        from ``resume_from`` on if the sink holds those before; the caller verifies what
        it received."""
        await download(self._session, self._places, host, repository, digest, sink=sink,
                       timeout=self.config.timeout, urls=urls,
                       resume_from=resume_from)  # fmt: skip

    async def stream_blob_range(
        self, host: str, repository: str, digest: Digest, span: tuple[int, int],
        consume: Consumer, *, urls: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Feed bytes ``span`` (``[start, end)``) of a blob to ``consume`` as they arrive,
        until it returns False (``registry/blob_stream.py``); the caller verifies them."""
        await stream_range(self._session, self._places, host, repository, digest, span=span,
                           consume=consume, urls=urls)  # fmt: skip


_MANIFEST_HEADERS = {"Accept": mediatypes.MANIFEST_ACCEPT}


def _referrers_index(raw: bytes, content_type: str, what: str) -> ImageIndex:
    listing = parse_manifest(raw, content_type)
    if not isinstance(listing, ImageIndex):
        raise MalformedContent(f"{what}: not an image index")
    return listing


def _header_digest(value: str, what: str) -> Digest:
    try:
        return Digest.parse(value.strip())
    except RegfsError:
        raise ProtocolError(f"{what}: bad Docker-Content-Digest {value[:100]!r}") from None
