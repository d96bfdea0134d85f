"""Where a request goes: mirrors first, then the registry, a foreign layer's own URLs last.

Registry layer. registries.conf decides where a pull goes: its mirrors first (as their
``pull-from-mirror`` allows), then the registry's own, possibly rewritten, location; an
alias (``registry/aliases.py``) is its own, exact place. A place that fails or lacks the
content hands over to the next. Each place says how often a request is sent there
(``Endpoint.attempts``: once where a next place is the retry), and a mirror gets at most
half of the time the caller has left, so a stalled one still leaves the registry time.
A registry marked insecure is spoken to in the scheme its first request decides
(``registry/schemes.py``): ``ready`` decides it before a request is sent there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, NotFound, RegfsError, Unavailable
from regfs.domain.reference import DOCKER_HUB_ALIASES, DOCKER_HUB_API_HOST, api_host
from regfs.registry import endpoints
from regfs.registry.config import ClientConfig
from regfs.registry.registries_conf import Endpoint
from regfs.registry.retry_policy import HANDOVER_ATTEMPTS, MAX_ATTEMPTS
from regfs.registry.schemes import Probe, Schemes

log = logging.getLogger(__name__)

MIRROR_REST = 30.0
"""Seconds a mirror found unreachable is skipped: a fleet whose cache went down pays its
connection timeouts once, not on every read."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BlobSource:
    """One place a blob may come from."""

    url: str
    what: str
    """Names the request in errors and logs."""
    sponsor: str | None
    """A URL of the registry whose manifest named ``url`` (a foreign layer's); None when
    ``url`` is the registry's own."""
    attempts: int


class Places:
    """The places of every registry a mount reads from, and the mirrors resting now."""

    def __init__(self, config: ClientConfig, probe: Probe) -> None:
        """``probe``: how an insecure registry is asked which scheme it speaks."""
        self._config = config
        self.plain_http = config.insecure_hosts | config.registries.insecure_hosts()
        """Hosts that may be spoken to over plain http (if they do not speak https)."""
        self._schemes = Schemes(probe)
        self._mirror_rests: dict[str, float] = {}
        """Mirrors found unreachable, with the time until which they are skipped."""
        self._insecure: dict[str, bool] = {}
        """``insecure``'s answers by host: asked for every request's URL, and the mount's
        configuration does not change."""

    def insecure(self, host: str) -> bool:
        """Whether ``host`` (as a user names it, or its API host) is marked insecure:
        ``--insecure-registry``, or in registries.conf, by its own table or as a mirror."""
        known = self._insecure.get(host)
        if known is None:
            known = self._insecure[host] = self._marked_insecure(host)
        return known

    def _marked_insecure(self, host: str) -> bool:
        if host in self._config.aliases:
            return False
        netloc = api_host(host)
        names = {host, netloc, *(DOCKER_HUB_ALIASES if netloc == DOCKER_HUB_API_HOST else ())}
        registries = self._config.registries
        return bool(names & self.plain_http) or any(registries.insecure(n) for n in names)

    async def ready(self, host: str) -> None:
        """Decide, with a first request, which scheme an insecure ``host`` speaks (once per
        mount); ``Unavailable`` if it could not be asked."""
        if self.insecure(host):
            await self._schemes.decide(api_host(host))

    def url(self, host: str, path: str) -> str:
        """https with the system's or certs.d's TLS; for an insecure host, the scheme
        ``ready`` decided (https until it did: never plain http unasked); plain http for
        a loopback host not marked insecure and without TLS set up in certs.d; an alias's
        own base URL, prefix included."""
        if host in self._config.aliases:
            return self._config.aliases[host] + path
        netloc = api_host(host)
        if self.insecure(host):
            return f"{self._schemes.decided(netloc) or 'https'}://{netloc}{path}"
        if self._config.tls.host_dir(netloc) is not None:
            return f"https://{netloc}{path}"
        return endpoints.base_url(host, ()) + path

    def endpoints(self, host: str, repository: str, *, by_digest: bool) -> list[Endpoint]:
        """Where to pull ``host/repository`` from, in order; AccessDenied if blocked."""
        if host in self._config.aliases:
            return [Endpoint(host, repository)]  # an alias is its own, exact place
        found = self._config.registries.endpoints(host, repository, by_digest=by_digest)
        if not found:
            source = self._config.registries.table_source(host, repository)
            raise AccessDenied(f"{host}/{repository}: blocked in {source}")
        return found

    def origin(self, host: str, repository: str = "", *, by_digest: bool = False) -> Endpoint:
        """The registry's own place (never a mirror): listings of a host, writes."""
        return self.endpoints(host, repository, by_digest=by_digest)[-1]

    async def pull(
        self,
        host: str,
        repository: str,
        attempt: Callable[[Endpoint], Awaitable[T]],
        *,
        by_digest: bool,
    ) -> T:
        """``attempt`` at each place in turn, until one answers; the last one's failure is
        the caller's."""
        places = self.endpoints(host, repository, by_digest=by_digest)
        for place in places[:-1]:
            if self._mirror_rests.get(place.host, 0.0) > trio.current_time():
                continue
            given = (trio.current_effective_deadline() - trio.current_time()) / 2
            with trio.move_on_after(given) as half:
                try:
                    await self.ready(place.host)
                    return await attempt(place)
                except RegfsError as error:
                    self._hand_over(host, repository, place, error)
            if half.cancelled_caught:
                stalled = Unavailable(f"no answer within {given:.3g}s, half the time left")
                self._hand_over(host, repository, place, stalled)
        await self.ready(places[-1].host)
        return await attempt(places[-1])

    def _hand_over(self, host: str, repository: str, place: Endpoint, error: RegfsError) -> None:
        if isinstance(error, Unavailable):
            self._mirror_rests[place.host] = trio.current_time() + MIRROR_REST
        log.info("%s/%s: mirror %s: %s; trying the next", host, repository, place.host, error)

    async def pull_blob(
        self,
        host: str,
        repository: str,
        digest: Digest,
        urls: tuple[str, ...],
        fetch: Callable[[BlobSource], Awaitable[T]],
    ) -> T:
        """``fetch`` from the registry's places, then, if none has the blob, from the
        layer's own ``urls`` (foreign layers; http and https only), which go for the
        registry (the ``sponsor``: its manifest named them)."""

        async def at(place: Endpoint) -> T:
            path = endpoints.blob_path(place.host, place.repository, str(digest))
            return await fetch(
                BlobSource(self.url(place.host, path), f"{place.host}: {path}", None,
                           place.attempts)
            )  # fmt: skip

        foreign = [url for url in urls if urlsplit(url).scheme in ("http", "https")]
        try:
            return await self.pull(host, repository, at, by_digest=True)
        except NotFound:
            if not foreign:
                raise
        registry = self.url(self.origin(host, repository, by_digest=True).host, "/v2/")
        name = f"{host}/{repository}@{digest}"
        for url in foreign[:-1]:
            try:
                return await fetch(BlobSource(url, f"{name} from {url}", registry,
                                              HANDOVER_ATTEMPTS))  # fmt: skip
            except RegfsError as error:
                log.info("%s: %s; trying the next URL", name, error)
        last = foreign[-1]
        return await fetch(BlobSource(last, f"{name} from {last}", registry, MAX_ATTEMPTS))
