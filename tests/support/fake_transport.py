"""An in-process registry for the client's component tests, answered as over a socket.

``httpx.MockTransport`` hands back responses whose body is already read, which a client
reading raw bytes (as regfs does for blobs and manifests) cannot stream. This transport
calls the same kind of handler and returns its body unread, byte for byte as written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class _UnreadBody(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


def unread(status: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A response whose body httpx has not touched (``content=`` would decode it at once
    by its ``Content-Encoding``)."""
    return httpx.Response(status, headers=headers, stream=_UnreadBody(body))


class StreamingTransport(httpx.AsyncBaseTransport):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self._handler(request)
        if isinstance(answer.stream, httpx.ByteStream):  # content=: already read, re-stream it
            return unread(answer.status_code, b"".join(answer.stream), dict(answer.headers))
        return httpx.Response(  # stream=: the handler's own stream, unread
            answer.status_code, headers=answer.headers, stream=answer.stream, request=request
        )


class CollectingSink:
    """A ``BlobSink`` keeping the blob in memory, for the client's download tests."""

    def __init__(self) -> None:
        self.received = bytearray()

    async def write(self, data: bytes) -> None:
        self.received += data

    async def restart(self) -> None:
        self.received.clear()
