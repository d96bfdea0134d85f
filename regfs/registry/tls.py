"""TLS as docker and podman set it up (``registry/tls_settings.py``), applied to requests.

Registry layer. Each registry with a ``certs.d`` directory gets a connection pool whose TLS
context is made from it; every other https origin shares one with the system trust store,
but a registry marked insecure, whose certificate is not verified (``unverified``). A
request the guard pinned (``guard.PINNED``) connects only to the addresses it checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from regfs.registry.guard import PINNED, resent
from regfs.registry.tls_settings import TlsSettings

log = logging.getLogger(__name__)


class PerHostTransport(httpx.AsyncBaseTransport):
    """Sends each request through the connection pool for its origin's TLS context."""

    def __init__(
        self, tls: TlsSettings, unverified: Callable[[str], bool] = lambda host: False
    ) -> None:
        """``unverified``: whether the registry at host[:port] is marked insecure."""
        self._tls = tls
        self._unverified = unverified
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
            context = (
                self._tls.unverified_context_for(host)
                if self._unverified(host)
                else self._tls.context_for(host)
            )
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
