"""``download_blob`` going on from bytes a sink holds already (a download cut off earlier):
a Range from there, a 200 answer's held bytes skipped, and a later place starting over."""

from __future__ import annotations

import os

import httpx
import trio

from regfs.domain.digest import Digest
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from tests.support.fake_transport import CollectingSink, StreamingTransport, unread

HOST = "127.0.0.1:5000"
BLOB = os.urandom(10_000)
HELD = 4_000


def serving(honour_range: bool, ranges: list[str | None]) -> RegistryClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        asked = request.headers.get("Range")
        ranges.append(asked)
        if asked is None or not honour_range:
            return unread(200, BLOB, {})
        start = int(asked.removeprefix("bytes=").removesuffix("-"))
        headers = {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"}
        return unread(206, BLOB[start:], headers)

    transport = StreamingTransport(handler)
    return RegistryClient(ClientConfig(timeout=5), transport=transport, resolver=transport.resolve)


async def held_then_downloaded(honour_range: bool) -> tuple[bytes, list[str | None]]:
    ranges: list[str | None] = []
    sink = CollectingSink()
    sink.received += BLOB[:HELD]
    client = serving(honour_range, ranges)
    await client.download_blob(HOST, "a", Digest.of(BLOB), sink, resume_from=HELD)
    return bytes(sink.received), ranges


async def test_a_download_goes_on_with_a_range_from_the_bytes_held(
    autojump_clock: trio.abc.Clock,
) -> None:
    received, ranges = await held_then_downloaded(honour_range=True)
    assert received == BLOB
    assert ranges == [f"bytes={HELD}-"]


async def test_a_whole_blob_answering_the_range_is_fed_past_the_bytes_held(
    autojump_clock: trio.abc.Clock,
) -> None:
    received, ranges = await held_then_downloaded(honour_range=False)
    assert received == BLOB
    assert ranges == [f"bytes={HELD}-"]
