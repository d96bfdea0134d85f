"""``download_blob`` going on from bytes a sink holds already (a download cut off earlier):
a Range from there, and a 200 answer's held bytes skipped."""

from __future__ import annotations

import os

import httpx
import pytest
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


@pytest.mark.parametrize("honour_range", [True, False], ids=["206", "whole blob 200"])
async def test_a_download_goes_on_with_a_range_from_the_bytes_held(
    honour_range: bool, autojump_clock: trio.abc.Clock
) -> None:
    """A 206 brings the rest; a registry answering the Range with the whole blob (200)
    has the held bytes skipped: the sink gets the blob once either way."""
    received, ranges = await held_then_downloaded(honour_range)
    assert received == BLOB
    assert ranges == [f"bytes={HELD}-"]
