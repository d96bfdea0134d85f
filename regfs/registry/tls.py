"""TLS as docker and podman set it up: the system trust store plus ``certs.d``.

Registry layer. containers-certs.d(5): a directory named ``HOST[:PORT]`` under
``$HOME/.config/containers/certs.d``, ``/etc/containers/certs.d`` or
``/etc/docker/certs.d`` (the first that exists wins) holds ``*.crt`` files (CAs trusted for
that registry, besides the system's) and ``*.cert`` + ``*.key`` pairs (a client
certificate). Each registry with such a directory gets a connection pool whose TLS context
is made from it; every other https origin shares one with the system trust store. A request
the guard pinned (``guard.PINNED``) connects only to the addresses it checked.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

import httpx

from regfs.registry.guard import PINNED, resent

log = logging.getLogger(__name__)

SYSTEM_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def certs_dirs(environment: Mapping[str, str]) -> list[Path]:
    """Where per-registry TLS files are looked for, in order."""
    user = (
        [Path(environment["HOME"]) / ".config/containers/certs.d"] if "HOME" in environment else []
    )
    return [*user, *SYSTEM_CERTS_DIRS]


class TlsSettings:
    """The TLS context for each registry host, made once from its ``certs.d`` directory."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.default = ssl.create_default_context()
        """The system trust store, for every host without a directory of its own."""
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._host_dirs: dict[str, Path | None] = {}

    def host_dir(self, host: str) -> Path | None:
        """The ``certs.d`` directory configured for ``host`` (``host:port``), if any; looked
        up once per host, as its TLS context is made once (every request's URL asks)."""
        if host not in self._host_dirs:
            self._host_dirs[host] = self._find_host_dir(host)
        return self._host_dirs[host]

    def _find_host_dir(self, host: str) -> Path | None:
        if not host or "/" in host:
            return None
        for root in self.dirs:
            candidate = root / host
            if candidate.is_dir():
                return candidate
        return None

    def context_for(self, host: str) -> ssl.SSLContext:
        if host not in self._contexts:
            directory = self.host_dir(host)
            self._contexts[host] = self.default if directory is None else _context(directory)
        return self._contexts[host]


def _context(directory: Path) -> ssl.SSLContext:
    """The system trust store plus the directory's CAs and client certificate."""
    context = ssl.create_default_context()
    for ca in sorted(directory.glob("*.crt")):
        context.load_verify_locations(cafile=ca)
    for certificate in sorted(directory.glob("*.cert")):
        key = certificate.with_suffix(".key")
        if not key.exists():
            log.warning("%s: no %s beside it: client certificate not used", certificate, key.name)
            continue
        context.load_cert_chain(certificate, key)
    log.info("TLS for %s: CAs and client certificates from %s", directory.name, directory)
    return context


class PerHostTransport(httpx.AsyncBaseTransport):
    """Sends each request through the connection pool for its origin's TLS context."""

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._default = httpx.AsyncHTTPTransport(verify=tls.default)
        self._by_host: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._transport_for(request.url)
        pinned: tuple[str, ...] = request.extensions.get(PINNED, ())
        if not pinned:
            return await transport.handle_async_request(request)
        return await _send_pinned(transport, request, pinned)

    def _transport_for(self, url: httpx.URL) -> httpx.AsyncHTTPTransport:
        if url.scheme != "https":
            return self._default
        host = url.netloc.decode()
        if host not in self._by_host:
            context = self._tls.context_for(host)
            self._by_host[host] = (
                self._default
                if context is self._tls.default
                else httpx.AsyncHTTPTransport(verify=context)
            )
        return self._by_host[host]

    async def aclose(self) -> None:
        for transport in {id(t): t for t in [self._default, *self._by_host.values()]}.values():
            await transport.aclose()


async def _send_pinned(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, addresses: tuple[str, ...]
) -> httpx.Response:
    """Send ``request`` to each of ``addresses`` in turn until one connects, never letting
    its host name be resolved again; ``Host`` and the name TLS checks (SNI) stay the name.

    Connections are pooled by address then: another name on the same address may reuse
    one, as HTTP/2 coalescing would; what it serves is checked by digest all the same.
    """
    name = request.url.raw_host.decode("ascii")
    for number, address in enumerate(addresses, start=1):
        url = request.url.copy_with(host=address)
        attempt = resent(request, url, {"sni_hostname": name})
        try:
            return await transport.handle_async_request(attempt)
        except httpx.ConnectError:
            if number == len(addresses):
                raise
    raise AssertionError("unreachable: the last address returns or raises")
