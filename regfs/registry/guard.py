"""The transport that refuses to follow a registry to addresses it may not send regfs to.

Registry layer (DNS lookups). Every request names its *sponsor* (``SPONSOR``, a
``Chain``): the host[:port] of the registry regfs chose from the user's configuration, on
whose word the request goes. A request to the sponsor itself passes. A request anywhere
else (a redirect hop, a foreign layer's URL, a token realm, an upload location) is checked
by ``addresses.refusal``: its host is resolved here, once, and every address must be one
that the way here vouches for: the kinds of address the sponsor was ever reached at, and
those of every answer along this chain of redirects (each is the address its connection
actually reached, not what a name says). The request then carries the checked addresses
(``PINNED``) and the transport below connects only to them, keeping the name for ``Host``
and TLS: a name that resolves differently a moment later (DNS rebinding) cannot slip
another address past the check. A name's answer is kept ``RESOLVED_TTL`` seconds, so the
Range reads of one redirected blob do not each cost a lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import cachetools
import httpx
import trio

from regfs.domain.errors import AccessDenied
from regfs.registry.addresses import AddressKind, address_kind, is_allowed, refusal

SPONSOR = "regfs.sponsor"
"""Request extension: the request's ``Chain``; redirects keep it (httpx passes a request's
extensions on to the next hop), and so does a token request made for it."""
PINNED = "regfs.pinned"
"""Request extension: the checked addresses of the target host, the only ones the
transport may connect to."""

RESOLVED_TTL = 60.0
"""Seconds a target name's addresses are used before it is resolved (and checked) again."""

Resolve = Callable[[str, int | None], Awaitable[list[str]]]
"""The addresses a host name resolves to (for a port), in the order to try them."""


async def resolve(host: str, port: int | None) -> list[str]:
    """The system resolver's answer (getaddrinfo, as a connection would ask it)."""
    answers = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def resent(request: httpx.Request, url: httpx.URL, extensions: dict[str, object]) -> httpx.Request:
    """``request`` to ``url`` (its ``Host`` header kept) with more ``extensions``; the
    original's extensions are shared along a redirect chain, so they are not changed."""
    copy = httpx.Request(
        request.method,
        url,
        headers=request.headers,
        stream=request.stream,
        extensions={**request.extensions, **extensions},
    )
    if isinstance(request.stream, httpx.ByteStream):
        copy.read()  # a body in memory stays readable, as it was
    return copy


@dataclass(slots=True)
class Chain:
    """A request and the hops it is sent on to: state, shared by every hop."""

    sponsor: str | None
    """host[:port] (as in its URL) of the registry the request goes for; None for none."""
    kinds: set[AddressKind] = field(default_factory=set)
    """The kinds of address the answers along the chain came from so far."""


class TargetRefused(AccessDenied):
    """A request the guard would not send: its target is on an address its sponsor may
    not send regfs to."""


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request's target against its sponsor before ``inner`` sends it."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        allowed: frozenset[str],
        resolver: Resolve = resolve,
    ) -> None:
        self._inner = inner
        self._allowed = allowed
        """Hosts (``addresses.allowed_hosts`` form) sent to unchecked: the user's word."""
        self._resolve = resolver
        self._resolved: cachetools.TTLCache[tuple[str, int | None], list[str]] = (
            cachetools.TTLCache(1024, RESOLVED_TTL, timer=trio.current_time)
        )
        self._seen: dict[str, frozenset[AddressKind]] = {}
        """The kinds of address each sponsor's connections reached."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chain = request.extensions.get(SPONSOR)
        if not isinstance(chain, Chain):
            chain = Chain(None)  # no registry vouches for it: public addresses only
        netloc = request.url.netloc.decode("ascii")
        host = request.url.raw_host.decode("ascii")
        if netloc != chain.sponsor and not is_allowed(host, netloc, self._allowed):
            request = await self._checked(request, chain, netloc, host)
        response = await self._inner.handle_async_request(request)
        kind = _peer_kind(response)
        if kind is not None:  # each answer speaks for where it sends regfs next
            chain.kinds.add(kind)
            if netloc == chain.sponsor:
                self._seen[netloc] = self._seen.get(netloc, frozenset()) | {kind}
        return response

    async def _checked(
        self, request: httpx.Request, chain: Chain, netloc: str, host: str
    ) -> httpx.Request:
        """``request`` pinned to its host's addresses, if the way here vouches for all of
        them; else ``TargetRefused``."""
        addresses = await self._addresses(request, host)
        kinds = self._seen.get(chain.sponsor or "", frozenset()) | chain.kinds
        reason = refusal(addresses, chain.sponsor, kinds)
        if reason is not None:
            raise TargetRefused(
                f"refused to send to {netloc}: {reason} (allow with --allow-redirect-to {host})"
            )
        return resent(request, request.url, {PINNED: tuple(addresses)})

    async def _addresses(self, request: httpx.Request, host: str) -> list[str]:
        """The host's addresses: itself if it is one, else the resolver's answer; a name
        that does not resolve fails as a connection would (a temporary failure)."""
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        key = (host, request.url.port)
        if key in self._resolved:
            return self._resolved[key]
        try:
            addresses = await self._resolve(host, request.url.port)
        except OSError as error:
            message = f"{host}: {error.strerror or error}"
            raise httpx.ConnectError(message, request=request) from None
        if not addresses:
            raise httpx.ConnectError(f"{host}: no address", request=request)
        self._resolved[key] = addresses
        return addresses

    async def aclose(self) -> None:
        await self._inner.aclose()


def _peer_kind(response: httpx.Response) -> AddressKind | None:
    """The kind of address an answer came from: its connection's peer (httpcore's
    ``network_stream``), if known."""
    stream = response.extensions.get("network_stream")
    try:
        peer = stream.get_extra_info("server_addr") if stream is not None else None
    except OSError:  # the connection is gone already
        return None
    return address_kind(str(peer[0])) if peer else None
