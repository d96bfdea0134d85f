"""Where the client pulls from: mirrors before the registry, blocked references, redirects
to object storage, and servers that ignore ``Range``. Fake registry, autojump clock."""

from __future__ import annotations

import httpx
import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, ProtocolError, Unavailable
from regfs.registry.client import RegistryClient
from regfs.registry.places import MIRROR_REST
from regfs.registry.retry_policy import HANDOVER_ATTEMPTS, MAX_ATTEMPTS
from tests.support.fake_transport import CollectingSink, Handler, conf_client

BLOB = bytes(range(256)) * 64
DIGEST = Digest.of(BLOB)
CONF = """
[[registry]]
prefix = "*.lan"
insecure = true
[[registry]]
prefix = "fleet.example"
location = "origin.example"
[[registry.mirror]]
location = "mirror.example:5000/cache"
[[registry]]
location = "blocked.example"
blocked = true
"""


def client_for(handler: Handler) -> RegistryClient:
    return conf_client(handler, CONF)


def ranged(request: httpx.Request, body: bytes) -> httpx.Response:
    if "Range" not in request.headers:
        return httpx.Response(200, content=body)
    start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
    headers = {"Content-Range": f"bytes {start}-{end}/{len(body)}"}
    return httpx.Response(206, content=body[start : end + 1], headers=headers)


@pytest.mark.parametrize("mirror_answer", ["missing", "down"])
async def test_a_mirror_that_fails_hands_over_to_the_registry(
    autojump_clock: trio.abc.Clock, mirror_answer: str
) -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.host == "mirror.example":
            if mirror_answer == "down":
                raise httpx.ConnectError("refused")
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        return ranged(request, BLOB)

    client = client_for(handler)
    assert await client.get_blob_range("fleet.example", "team/app", DIGEST, 10, 20) == BLOB[10:20]
    mirror = f"mirror.example/v2/cache/team/app/blobs/{DIGEST}"
    assert seen == [mirror, f"origin.example/v2/team/app/blobs/{DIGEST}"]  # the mirror once


async def test_each_foreign_url_but_the_last_is_asked_once(autojump_clock: trio.abc.Clock) -> None:
    """A foreign layer's URLs hand over to each other as mirrors do; the last one, with
    nothing after it, gets every attempt the retry policy allows."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "origin.example":
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        return httpx.Response(503)

    urls = ("https://cdn1.example/layer", "https://cdn2.example/layer")
    with pytest.raises(Unavailable, match=r"cdn2\.example/layer: HTTP 503"):
        await client_for(handler).get_blob_range(
            "fleet.example", "team/app", DIGEST, 10, 20, urls=urls
        )
    assert seen.count("cdn1.example") == HANDOVER_ATTEMPTS
    assert seen.count("cdn2.example") == MAX_ATTEMPTS


async def test_a_mirror_that_works_is_all_that_is_asked(autojump_clock: trio.abc.Clock) -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        return ranged(request, BLOB)

    assert await client_for(handler).get_blob("fleet.example", "a", DIGEST, len(BLOB)) == BLOB
    assert seen == ["mirror.example"]


async def test_insecure_on_a_wildcard_prefix_allows_plain_http_to_its_hosts(
    autojump_clock: trio.abc.Clock,
) -> None:
    """reg.lan:5000 speaks plain http only: https fails as TLS does against it."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.netloc.decode()}")
        if request.url.host == "reg.lan" and request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        return ranged(request, BLOB)

    client = client_for(handler)
    for host in ("reg.lan:5000", "origin.example"):
        assert await client.get_blob(host, "a", DIGEST, len(BLOB)) == BLOB
    # reg.lan: https tried first (its certificate unchecked), as containers/image does
    assert seen == ["https://reg.lan:5000", *["http://reg.lan:5000"] * 2, "https://origin.example"]


async def test_a_download_that_breaks_on_the_mirror_starts_over_at_the_registry(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield BLOB[:100]
            raise httpx.RemoteProtocolError("peer closed")

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.example":
            return httpx.Response(200, stream=Broken())
        return httpx.Response(200, content=BLOB)

    sink = CollectingSink()
    await client_for(handler).download_blob("fleet.example", "a", DIGEST, sink)
    assert bytes(sink.received) == BLOB


async def test_a_download_broken_off_is_continued_where_it_broke(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A reset 100 bytes into a big layer: the registry is asked for the rest (as docker
    and containerd resume a pull), not the whole blob again, nor the read failed."""
    seen: list[str | None] = []

    class Broken(httpx.AsyncByteStream):
        def __init__(self, body: bytes) -> None:
            self.body = body

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield self.body[:100]
            raise httpx.RemoteProtocolError("peer closed")

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Range"))
        start = 100 * (len(seen) - 1)
        rest = {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"}
        if len(seen) == 1:
            return httpx.Response(200, stream=Broken(BLOB))
        if len(seen) == 2:
            return httpx.Response(206, stream=Broken(BLOB[start:]), headers=rest)
        return httpx.Response(206, content=BLOB[start:], headers=rest)

    sink = CollectingSink()
    await client_for(handler).download_blob("registry.example", "a", DIGEST, sink)
    assert bytes(sink.received) == BLOB
    assert seen == [None, "bytes=100-", "bytes=200-"]


async def test_a_download_that_breaks_without_progress_fails(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Empty(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            raise httpx.RemoteProtocolError("peer closed")
            yield b""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Empty())

    with pytest.raises(Unavailable, match="after 0 bytes"):
        await client_for(handler).download_blob("registry.example", "a", DIGEST, CollectingSink())


async def test_a_blocked_reference_is_refused_without_a_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    with pytest.raises(AccessDenied, match=r"blocked\.example/a: blocked in registries\.conf"):
        await client_for(handler).get_blob("blocked.example", "a", DIGEST, 10)


def cdn_registry(seen: list[httpx.Request], refusals: list[int]) -> Handler:
    """A registry that redirects blobs to signed URLs on a CDN, which refuses the first
    ``refusals[0]`` of them (expired signatures)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cdn.example":
            if refusals[0] > 0:
                refusals[0] -= 1
                return httpx.Response(403, text="Request has expired")
            return ranged(request, BLOB)
        if request.headers.get("Authorization") != "Bearer t":
            challenge = 'Bearer realm="https://origin.example/token"'
            if request.url.path == "/token":
                return httpx.Response(200, json={"token": "t"})
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        location = f"https://cdn.example/blob?X-Amz-Signature=secret{len(seen)}"
        return httpx.Response(307, headers={"Location": location})

    return handler


async def test_redirects_keep_the_range_and_drop_authorization(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []
    client = client_for(cdn_registry(seen, [0]))
    assert await client.get_blob_range("origin.example", "a", DIGEST, 5, 50) == BLOB[5:50]
    (cdn,) = [r for r in seen if r.url.host == "cdn.example"]
    assert cdn.headers["Range"] == "bytes=5-49" and "Authorization" not in cdn.headers


async def test_an_expired_signed_url_is_asked_for_again_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []
    client = client_for(cdn_registry(seen, [1]))
    assert await client.get_blob_range("origin.example", "a", DIGEST, 0, 10) == BLOB[:10]
    with pytest.raises(AccessDenied, match=r"redirected to cdn\.example") as caught:
        await client_for(cdn_registry([], [2])).get_blob_range("origin.example", "a", DIGEST, 0, 9)
    assert "secret" not in str(caught.value)


async def test_a_server_that_ignores_range_is_read_only_as_far_as_needed(
    autojump_clock: trio.abc.Clock,
) -> None:
    """httpx leaves its inner stream generators to the garbage collector when a body is
    not read to its end (hence the filter in pyproject.toml); the connection itself is closed."""
    sent: list[int] = []

    class Whole(httpx.AsyncByteStream):
        """The whole blob in 1 KiB pieces, counting what was handed out."""

        def __aiter__(self) -> Whole:
            return self

        async def __anext__(self) -> bytes:
            offset = len(sent) * 1024
            if offset >= len(BLOB):
                raise StopAsyncIteration
            sent.append(offset)
            return BLOB[offset : offset + 1024]

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Whole())

    client = client_for(handler)
    assert await client.get_blob_range("origin.example", "a", DIGEST, 3000, 5000) == BLOB[3000:5000]
    assert max(sent) < 5 * 1024  # stopped soon after the range, not at the blob's end


async def test_a_206_for_another_range_is_refused(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, content=BLOB[:10], headers={"Content-Range": "bytes 0-9/99"})

    with pytest.raises(ProtocolError, match="asked for bytes from 50"):
        await client_for(handler).get_blob_range("origin.example", "a", DIGEST, 50, 60)


async def test_an_unreachable_mirror_is_left_alone_for_a_while(
    autojump_clock: trio.abc.Clock,
) -> None:
    mirror_calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal mirror_calls
        if request.url.host == "mirror.example":
            mirror_calls += 1
            raise httpx.ConnectError("refused")
        return ranged(request, BLOB)

    client = client_for(handler)
    for _ in range(3):
        assert await client.get_blob("fleet.example", "a", DIGEST, len(BLOB)) == BLOB
    assert mirror_calls == 1  # one failed try (a mirror is not retried), then skipped
    await trio.sleep(MIRROR_REST)
    assert await client.get_blob("fleet.example", "a", DIGEST, len(BLOB)) == BLOB
    assert mirror_calls == 2  # tried again once it has rested


async def test_a_stalled_mirror_leaves_the_registry_time_within_the_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.example":
            await trio.sleep_forever()
        return ranged(request, BLOB)

    start = trio.current_time()
    with trio.fail_after(5):  # a FUSE request with --timeout 5
        got = await client_for(handler).get_blob_range("fleet.example", "a", DIGEST, 10, 20)
    assert got == BLOB[10:20]
    assert trio.current_time() - start == pytest.approx(2.5, abs=0.01)  # the mirror's half
