"""An in-process registry for the client's component tests, answered as over a socket.

``httpx.MockTransport`` hands back responses whose body is already read, which a client
reading raw bytes (as regfs does for blobs and manifests) cannot stream. This transport
calls the same kind of handler and returns its body unread, byte for byte as written.

It is also the tests' DNS (``resolve``): a name is at the address ``addresses`` gives it,
an IP literal at itself, any other name at ``PUBLIC_ADDRESS``; each response says which
address it came from, as httpcore's ``network_stream`` does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import httpx

from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.registry.registries_conf import merge, parse_registries_conf

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
PUBLIC_ADDRESS = "93.184.215.14"
"""Where names the tests do not place are: a global unicast address (example.com's)."""
NO_CLIENT = SimpleNamespace(config=SimpleNamespace(timeout=5.0))
"""Stands for the registry client of a ``LayerStore`` whose test never asks a registry."""


class _UnreadBody(httpx.AsyncByteStream, AsyncIterator[bytes]):
    """The body in one piece; an iterator of its own, not a generator, so that a reader
    stopping early leaves nothing for the garbage collector to finish."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


def unread(status: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A response whose body httpx has not touched (``content=`` would decode it at once
    by its ``Content-Encoding``)."""
    return httpx.Response(status, headers=headers, stream=_UnreadBody(body))


class _Peer:
    """What httpcore's ``network_stream`` extension tells of a connection: its peer."""

    def __init__(self, address: str, port: int) -> None:
        self._address = (address, port)

    def get_extra_info(self, info: str) -> object:
        return self._address if info == "server_addr" else None


class StreamingTransport(httpx.AsyncBaseTransport):
    def __init__(self, handler: Handler, addresses: dict[str, list[str]] | None = None) -> None:
        self._handler = handler
        self.addresses = addresses or {}
        """Host name → its addresses, for names the tests place."""

    async def resolve(self, host: str, port: int | None) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return self.addresses.get(host, [PUBLIC_ADDRESS])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self._handler(request)
        if isinstance(answer.stream, httpx.ByteStream):  # content=: already read, re-stream it
            response = unread(answer.status_code, b"".join(answer.stream), dict(answer.headers))
        else:  # stream=: the handler's own stream, unread
            response = httpx.Response(
                answer.status_code, headers=answer.headers, stream=answer.stream, request=request
            )
        (address, *_) = await self.resolve(request.url.host, request.url.port)
        response.extensions["network_stream"] = _Peer(address, request.url.port or 443)
        return response


class CollectingSink:
    """A ``BlobSink`` keeping the blob in memory, for the client's download tests."""

    def __init__(self) -> None:
        self.received = bytearray()

    async def write(self, data: bytes) -> None:
        self.received += data

    async def restart(self) -> None:
        self.received.clear()


def conf_client(
    handler: Handler, conf: str, insecure_hosts: frozenset[str] = frozenset()
) -> RegistryClient:
    """A client (5 s timeout) that reads ``conf`` as its registries.conf, answered by
    ``handler``, which is also its DNS (``StreamingTransport.resolve``)."""
    registries = merge([("registries.conf", parse_registries_conf(conf, "registries.conf"))])
    config = ClientConfig(timeout=5, insecure_hosts=insecure_hosts, registries=registries)
    transport = StreamingTransport(handler)
    return RegistryClient(config, transport=transport, resolver=transport.resolve)
