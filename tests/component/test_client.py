"""RegistryClient against an in-process fake registry on trio's autojump clock."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, MalformedContent, ProtocolError, Unavailable
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.registry.host_stats import SILENT_PROBE, UNREACHABLE_RECHECK
from regfs.registry.request_deadline import request_deadline
from regfs.registry.retry_policy import MAX_ATTEMPTS
from tests.support.fake_transport import CollectingSink, Handler, StreamingTransport, unread

HOST = "127.0.0.1:5000"


DIGEST = "sha256:" + "1" * 64


def client_for(handler: Handler, timeout: float = 5) -> RegistryClient:
    transport = StreamingTransport(handler)
    return RegistryClient(
        ClientConfig(timeout=timeout), transport=transport, resolver=transport.resolve
    )


def catalog(*names: str, link: str | None = None) -> httpx.Response:
    headers = {"Link": link} if link else {}
    return httpx.Response(200, json={"repositories": list(names)}, headers=headers)


async def test_temporary_failures_are_retried(autojump_clock: trio.abc.Clock) -> None:
    answers = [httpx.Response(503), httpx.Response(502), catalog("a")]
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)

    assert await client_for(handler).list_repositories(HOST) == ["a"]
    assert len(requests) == 3


async def test_persistent_failure_gives_up_after_a_bounded_number_of_attempts(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="boom")

    with pytest.raises(Unavailable, match="HTTP 500"):
        await client_for(handler).list_repositories(HOST)
    assert calls == MAX_ATTEMPTS


async def test_connection_errors_are_retried_then_reported(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(Unavailable, match="ConnectError: Connection refused"):
        await client_for(handler).list_repositories(HOST)


async def test_a_host_that_could_not_be_reached_gets_one_attempt_a_request_until_it_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    """During an outage a path looked up name by name fails at once for each name, not
    after a round of backoff each; a while later, or once the host answers, requests are
    sent with all their attempts again."""
    calls: list[float] = []
    down = True

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        if down:
            raise httpx.ConnectError("Connection refused")
        return httpx.Response(503) if len(calls) % 2 else catalog("a")

    client = client_for(handler)
    with pytest.raises(Unavailable):
        await client.list_repositories(HOST)
    assert len(calls) == MAX_ATTEMPTS
    for _ in range(3):
        started = trio.current_time()
        with pytest.raises(Unavailable, match="Connection refused"):
            await client.list_tags(HOST, "some/repository")
        assert trio.current_time() == started
    assert len(calls) == MAX_ATTEMPTS + 3
    await trio.sleep(UNREACHABLE_RECHECK)  # found unreachable a while ago: asked in full
    with pytest.raises(Unavailable):
        await client.list_repositories(HOST)
    assert len(calls) == 2 * MAX_ATTEMPTS + 3
    down = False
    assert await client.list_repositories(HOST) == ["a"]  # one attempt: it answered
    calls.clear()
    assert await client.list_repositories(HOST) == ["a"]  # a 503 retried again
    assert len(calls) == 2


async def test_a_host_that_answered_nothing_is_given_seconds_a_request_for_a_while(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A registry that takes requests and never answers costs one deadline; requests to it
    in the next ``UNREACHABLE_RECHECK`` seconds are given ``SILENT_PROBE`` each (podman
    looks a store's layers up one after another), and one sent once it is back is
    answered as before."""
    calls: list[str] = []
    silent = True

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if silent:
            await trio.sleep(1000)
        return catalog("a")

    client = client_for(handler)
    start = trio.current_time()
    with pytest.raises(Unavailable, match="no answer within 5s"):
        await client.list_repositories(HOST)
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)
    said = f"{HOST} answered nothing in 5s, nor in {SILENT_PROBE:g}s a request since"
    for _ in range(3):  # each probe still unanswered keeps the host silent
        started = trio.current_time()
        with pytest.raises(Unavailable, match=said):
            await client.list_tags(HOST, "some/repository")
        assert trio.current_time() - started == pytest.approx(SILENT_PROBE, abs=0.01)
    assert len(calls) == 4
    silent = False
    assert await client.list_repositories(HOST) == ["a"]
    await trio.sleep(UNREACHABLE_RECHECK)
    silent = True  # answered since: a whole deadline again
    start = trio.current_time()
    with pytest.raises(Unavailable, match="no answer within 5s"):
        await client.list_repositories(HOST)
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_a_request_left_unanswered_by_a_host_that_answers_others_is_its_own_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Only a host that answered nothing at all is left alone: one slow request among
    answered ones, or a request its caller gave up on, does not stop the next."""
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v2/_catalog":
            await trio.sleep(1000)
        return httpx.Response(200, json={"name": "some/repository", "tags": ["1"]})

    client = client_for(handler)

    async def answered_meanwhile() -> None:
        await trio.sleep(1)
        assert await client.list_tags(HOST, "some/repository") == ["1"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answered_meanwhile)
        with pytest.raises(Unavailable, match="no answer within 5s"):
            await client.list_repositories(HOST)
    assert await client.list_tags(HOST, "some/repository") == ["1"]
    async with trio.open_nursery() as nursery:  # a caller that stops waiting

        async def give_up() -> None:
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

        nursery.start_soon(give_up)
        await client.list_repositories(HOST)
    assert await client.list_tags(HOST, "some/repository") == ["1"]
    assert calls.count("/v2/some/repository/tags/list") == 3


async def test_a_registry_that_answers_every_request_in_3s_is_not_silent(
    autojump_clock: trio.abc.Clock,
) -> None:
    """--timeout 5, a registry answering each request in 3 s: a FUSE request that asks two
    things one after another (a tag, then another) fails at 5 s, its second question sent
    2 s before the deadline; that is no silence (the host answered the first, and 2 s is
    too near to tell), so the tag lists asked right after are answered in their 3 s, one
    after another."""
    digest = "sha256:" + "1" * 64

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3)
        if "/manifests/" in request.url.path:
            return unread(200, b"", {"Docker-Content-Digest": digest})
        return httpx.Response(200, json={"name": "app", "tags": ["1"]})

    client = client_for(handler)
    with request_deadline(5), pytest.raises(Unavailable, match="no answer within 2s"):
        await client.resolve_tag(HOST, "app", "1")
        await client.resolve_tag(HOST, "app", "2")
    for _ in range(3):  # one after another, as ls -l or podman would
        assert await client.list_tags(HOST, "app") == ["1"]


async def test_a_body_that_began_at_once_is_not_cut_at_the_silent_probe(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Back from a silence, the registry answers a blob's headers at once; its body (768 KiB
    on a slow link) takes 3 s, within --timeout 5: ``SILENT_PROBE`` is the time to begin
    an answer, and the body has the request's whole deadline."""
    silent = True

    async def handler(request: httpx.Request) -> httpx.Response:
        if silent:
            await trio.sleep(1000)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(6):
                await trio.sleep(0.5)
                yield b"x" * (1 << 17)

        return httpx.Response(200, content=body())

    client = client_for(handler)
    with pytest.raises(Unavailable, match="no answer within 5s"):
        await client.list_repositories(HOST)
    silent = False
    data = await client.get_blob_range(HOST, "app", Digest.parse(DIGEST), 0, 6 << 17)
    assert len(data) == 6 << 17


@pytest.mark.parametrize("host", ["127.0.0.1:80", "LOCALHOST:5000"])
async def test_a_host_spelled_otherwise_than_httpx_spells_it_is_seen_answering(
    autojump_clock: trio.abc.Clock, host: str
) -> None:
    """httpx spells a response's host its own way (lower case, no default port): the
    answers to a host written otherwise are noted all the same, so one stalled request
    among answered ones does not make it silent."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/_catalog":
            await trio.sleep(1000)
        if request.url.path.endswith("/slow/tags/list"):
            await trio.sleep(3)
        return httpx.Response(200, json={"name": "app", "tags": ["1"]})

    client = client_for(handler)

    async def answered_meanwhile() -> None:
        await trio.sleep(1)
        assert await client.list_tags(host, "app") == ["1"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answered_meanwhile)
        with pytest.raises(Unavailable, match="no answer within 5s"):
            await client.list_repositories(host)
    assert await client.list_tags(host, "slow") == ["1"]  # 3 s, within --timeout


async def test_retry_after_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "3"}), catalog("a")]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    start = trio.current_time()
    assert await client_for(handler, timeout=30).list_repositories(HOST) == ["a"]
    assert trio.current_time() - start == pytest.approx(3, abs=0.01)


async def test_retry_after_as_an_http_date_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    """The other form RFC 9110 allows: a rate limiter asked again at once would refuse
    again, and the next attempts would be spent in a second."""
    in_4s = email.utils.formatdate(time.time() + 4, usegmt=True)
    answers = [httpx.Response(429, headers={"Retry-After": in_4s}), catalog("a")]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    start = trio.current_time()
    assert await client_for(handler, timeout=30).list_repositories(HOST) == ["a"]
    assert trio.current_time() - start == pytest.approx(4, abs=1.5)  # whole seconds, wall clock


async def test_a_retry_after_past_the_deadline_fails_at_once_saying_why(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Docker Hub's pull rate limit: waiting out the deadline would only turn the
    registry's own reason into "no answer within 30s"."""
    rate_limited = {"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit"}]}
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(429, headers={"Retry-After": "3600"}, json=rate_limited)

    start = trio.current_time()
    with pytest.raises(Unavailable, match=r"HTTP 429 \(TOOMANYREQUESTS: pull rate limit"):
        await client_for(handler, timeout=30).list_repositories(HOST)
    assert trio.current_time() - start < 1 and len(requests) == 1


async def test_a_stalled_registry_fails_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return catalog()

    start = trio.current_time()
    with pytest.raises(Unavailable, match="no answer within 5s"):
        await client_for(handler).list_repositories(HOST)
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_pages_are_followed_and_loops_refused(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "last" not in request.url.params:
            return catalog("a", "b", link='</v2/_catalog?last=b>; rel="next"')
        if request.url.params["last"] == "b":
            return catalog("c", link=f'<http://{HOST}/v2/_catalog?last=c>; rel="next"')
        return catalog("d", link='</v2/_catalog?last=c>; rel="next"')  # points back

    with pytest.raises(ProtocolError, match="pagination loops"):
        await client_for(handler).list_repositories(HOST)


@pytest.mark.parametrize("pace", [0.3, 2.5])
async def test_a_catalog_of_many_pages_takes_as_long_as_its_pages_keep_coming(
    autojump_clock: trio.abc.Clock, pace: float
) -> None:
    """61 pages, each 0.3 s away (a registry of 120 repositories paged by 2 on a far link):
    18 s, past a --timeout of 2 s, inside a FUSE request too; it was EIO, "no answer
    within 2s", and so was every name looked up below the host. A page slower than the
    timeout still fails the listing, within the timeout."""
    pages = 61

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(pace)
        number = int(request.url.params.get("page", "0"))
        following = f'</v2/_catalog?page={number + 1}>; rel="next"'
        return catalog(f"r{number}", link=following if number + 1 < pages else None)

    start = trio.current_time()
    with request_deadline(2) as scope:
        if pace > 2:
            with pytest.raises(Unavailable, match="no answer within 2s"):
                await client_for(handler, timeout=2).list_repositories(HOST)
        else:
            names = await client_for(handler, timeout=2).list_repositories(HOST)
            assert names == [f"r{n}" for n in range(pages)]
    assert not scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(2 if pace > 2 else pages * pace, abs=0.1)


async def test_tags_null_means_no_tags(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "a", "tags": None})

    assert await client_for(handler).list_tags(HOST, "a") == []


def bearer_registry(
    token_requests: list[httpx.Request], grant: bool = True, expires_in: int | None = None
) -> Handler:
    """A registry that wants ``Bearer granted-N`` tokens, and their token server."""
    challenge = 'Bearer realm="http://auth.test/token",service="reg",scope="repository:a:pull"'

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_requests.append(request)
            token = f"granted-{len(token_requests)}" if grant else "useless"
            lifetime = {"expires_in": expires_in} if expires_in else {}
            return httpx.Response(200, json={"token": token, **lifetime})
        if not request.headers.get("Authorization", "").startswith("Bearer granted-"):
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json={"tags": ["1"]})

    return handler


async def test_bearer_tokens_are_fetched_once_and_reused(autojump_clock: trio.abc.Clock) -> None:
    token_requests: list[httpx.Request] = []
    client = client_for(bearer_registry(token_requests))
    for _ in range(3):
        assert await client.list_tags(HOST, "a") == ["1"]
    assert len(token_requests) == 1
    assert token_requests[0].url.params["scope"] == "repository:a:pull"
    assert token_requests[0].url.params["service"] == "reg"
    assert "Authorization" not in token_requests[0].headers  # anonymous


async def test_requests_sent_at_once_for_a_scope_share_one_token(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A tag's HEAD and its tag list, or ``ls -l``'s links, go out together and all get
    a 401 the first time: the first fetches the token, the others take it."""
    token_requests: list[httpx.Request] = []
    registry = bearer_registry(token_requests)

    async def a_round_trip_away(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.03)
        return await registry(request)

    client = client_for(a_round_trip_away)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(client.list_tags, HOST, "a")
    assert len(token_requests) == 1
    assert await client.list_tags(HOST, "a") == ["1"]
    assert len(token_requests) == 1


async def test_a_token_that_does_not_help_is_access_denied(autojump_clock: trio.abc.Clock) -> None:
    client = client_for(bearer_registry([], grant=False))
    with pytest.raises(AccessDenied, match="HTTP 401"):
        await client.list_tags(HOST, "a")


async def test_manifest_bytes_must_match_the_registry_header(
    autojump_clock: trio.abc.Clock,
) -> None:
    body = b'{"schemaVersion":2}'
    good = "sha256:" + hashlib.sha256(body).hexdigest()

    def handler_with(digest: str) -> Handler:
        async def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body, headers={"Docker-Content-Digest": digest})

        return handler

    fetched = await client_for(handler_with(good)).get_manifest(HOST, "a", "1")
    assert fetched.raw == body and str(fetched.digest) == good
    with pytest.raises(MalformedContent, match="but the registry says"):
        await client_for(handler_with("sha256:" + "0" * 64)).get_manifest(HOST, "a", "1")


async def test_resolve_tag_falls_back_to_get_without_the_header(
    autojump_clock: trio.abc.Clock,
) -> None:
    body = json.dumps({"schemaVersion": 2}).encode()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"" if request.method == "HEAD" else body)

    assert await client_for(handler).resolve_tag(HOST, "a", "1") == Digest.of(body)


@pytest.mark.parametrize("refusal", [405, 400, 501])
async def test_a_registry_that_refuses_head_is_asked_with_a_get(
    autojump_clock: trio.abc.Clock, refusal: int
) -> None:
    """A proxy or repository manager set up for GET only: a tag and a kept manifest are
    still confirmed, with a GET (the host is not asked a HEAD again: a round trip more
    at each lookup); a refusal of the manifest itself stays one."""
    body = json.dumps({"schemaVersion": 2}).encode()
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "HEAD":
            return httpx.Response(refusal)
        if request.url.path.endswith("/refused"):
            return httpx.Response(403)
        return httpx.Response(200, content=body)

    client = client_for(handler)
    assert await client.resolve_tag(HOST, "a", "1") == Digest.of(body)
    await client.manifest_exists(HOST, "a", Digest.of(body))
    assert seen == ["HEAD", "GET", "GET"]
    with pytest.raises(AccessDenied):
        await client.resolve_tag(HOST, "a", "refused")


async def test_oversized_responses_are_refused(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 100)

    with pytest.raises(MalformedContent, match="response of 100 bytes, more than 10"):
        await client_for(handler).get_blob(HOST, "a", Digest.of(b""), max_bytes=10)


async def test_redirects_to_another_origin_drop_authorization(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=b"blob")
        if request.headers.get("Authorization") != "Bearer granted":
            challenge = 'Bearer realm="http://auth.test/token",service="reg"'
            if request.url.host == "auth.test":
                return httpx.Response(200, json={"token": "granted"})
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(307, headers={"Location": "http://cdn.test/blob?sig=1"})

    assert await client_for(handler).get_blob(HOST, "a", Digest.of(b"blob"), 100) == b"blob"
    cdn = [r for r in seen if r.url.host == "cdn.test"]
    assert cdn and "Authorization" not in cdn[0].headers


async def test_tokens_are_reused_until_they_expire(autojump_clock: trio.abc.Clock) -> None:
    token_requests: list[httpx.Request] = []
    client = client_for(bearer_registry(token_requests, expires_in=300))
    for _ in range(3):
        assert await client.list_tags(HOST, "a") == ["1"]
        await trio.sleep(90)  # 270 s: within the token's life (less the renewal margin)
    assert len(token_requests) == 1
    await trio.sleep(30)  # 300 s: the token has expired (renewed 10 s early)
    assert await client.list_tags(HOST, "a") == ["1"]
    assert len(token_requests) == 2


async def test_backoff_passes_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    start = trio.current_time()
    with pytest.raises(Unavailable):
        await client_for(handler, timeout=30).list_repositories(HOST)
    backoff = trio.current_time() - start  # 0.25 + 0.5 + 1 s, each times 0.5 to 1.5 (jitter)
    assert 0.5 * 1.75 <= backoff <= 1.5 * 1.75


def raw_blob_registry(body: bytes, seen: list[httpx.Request]) -> Handler:
    """Serves ``body`` for every blob and manifest with ``Content-Encoding: gzip``, as
    object stores do for files uploaded with that metadata."""

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Encoding": "gzip", "Docker-Content-Digest": str(Digest.of(body))}
        if "Range" in request.headers:
            start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
            return unread(206, body[start : end + 1], headers)
        return unread(200, body, headers)

    return handler


async def test_blobs_and_manifests_are_read_as_sent(autojump_clock: trio.abc.Clock) -> None:
    """A gzip layer labelled ``Content-Encoding: gzip`` is the blob, not something to
    decode: its digest covers these bytes, and a Range counts them."""
    layer = gzip.compress(b"tar bytes" * 1000)
    seen: list[httpx.Request] = []
    client = client_for(raw_blob_registry(layer, seen))
    digest = Digest.of(layer)
    assert await client.get_blob(HOST, "a", digest, len(layer)) == layer
    assert await client.get_blob_range(HOST, "a", digest, 3, 40) == layer[3:40]
    sink = CollectingSink()
    await client.download_blob(HOST, "a", digest, sink)
    assert bytes(sink.received) == layer
    assert (await client.get_manifest(HOST, "a", "1")).raw == layer
    assert {request.headers["Accept-Encoding"] for request in seen} == {"identity"}


async def test_listings_are_decoded(autojump_clock: trio.abc.Clock) -> None:
    body = gzip.compress(json.dumps({"repositories": ["a"]}).encode())

    async def handler(request: httpx.Request) -> httpx.Response:
        return unread(200, body, {"Content-Encoding": "gzip"})

    assert await client_for(handler).list_repositories(HOST) == ["a"]


def calls(client: RegistryClient) -> dict[str, Callable[[], Awaitable[object]]]:
    """Every public call of the client, with arguments that reach the handler."""
    digest = Digest.of(b"x")
    return {
        "list_repositories": lambda: client.list_repositories(HOST),
        "list_tags": lambda: client.list_tags(HOST, "a"),
        "resolve_tag": lambda: client.resolve_tag(HOST, "a", "1"),
        "get_manifest": lambda: client.get_manifest(HOST, "a", "1"),
        "get_blob": lambda: client.get_blob(HOST, "a", digest, 10),
        "get_blob_range": lambda: client.get_blob_range(HOST, "a", digest, 0, 1),
        "download_blob": lambda: client.download_blob(HOST, "a", digest, CollectingSink()),
    }


HTTPX_FAILURES = {
    "connect": (httpx.ConnectError("refused"), Unavailable, MAX_ATTEMPTS),
    "read timeout": (httpx.ReadTimeout("slow"), Unavailable, MAX_ATTEMPTS),
    "reset": (httpx.RemoteProtocolError("peer closed"), Unavailable, MAX_ATTEMPTS),
    "proxy": (httpx.ProxyError("proxy down"), Unavailable, MAX_ATTEMPTS),
    "local protocol": (httpx.LocalProtocolError("bad header"), ProtocolError, 1),
    "scheme": (httpx.UnsupportedProtocol("ftp://"), ProtocolError, 1),
    "decoding": (httpx.DecodingError("bad gzip"), ProtocolError, 1),
    "redirects": (httpx.TooManyRedirects("loop"), ProtocolError, 1),
    "url": (httpx.InvalidURL("bad"), ProtocolError, 1),
    "stream": (httpx.StreamConsumed(), ProtocolError, 1),
}


CALLS = ("list_repositories", "list_tags", "resolve_tag", "get_manifest", "get_blob",
         "get_blob_range", "download_blob")  # fmt: skip


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("failure", sorted(HTTPX_FAILURES))
async def test_every_httpx_error_becomes_a_domain_error(
    autojump_clock: trio.abc.Clock, call: str, failure: str
) -> None:
    error, expected, attempts = HTTPX_FAILURES[failure]
    tries = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal tries
        tries += 1
        raise error

    client_calls = calls(client_for(handler))
    assert sorted(client_calls) == sorted(CALLS)
    with pytest.raises(expected, match=type(error).__name__):
        await client_calls[call]()
    assert tries == attempts


async def test_a_head_is_not_refused_for_the_length_of_the_body_it_lacks(
    autojump_clock: trio.abc.Clock,
) -> None:
    digest = "sha256:" + "1" * 64

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Docker-Content-Digest": digest, "Content-Length": "347"}
        return unread(200, b"", headers)

    assert str(await client_for(handler).resolve_tag(HOST, "a", "1")) == digest


async def test_a_listing_without_end_is_cut_off_at_its_size_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    page = [f"repository-{n:07}" for n in range(40_000)]  # about 1 MiB a page

    async def handler(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params.get("page", "0"))
        return catalog(*page, link=f'</v2/_catalog?page={number + 1}>; rel="next"')

    with pytest.raises(MalformedContent, match="listing larger than 64 MiB"):
        await client_for(handler).list_repositories(HOST)


async def test_a_blob_that_trickles_fails_within_a_bounded_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Trickle(httpx.AsyncByteStream):
        def __aiter__(self) -> Trickle:
            return self

        async def __anext__(self) -> bytes:
            await trio.sleep(1)
            return b"x"  # a byte a second, forever

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Trickle())

    start = trio.current_time()
    with pytest.raises(Unavailable, match="too slow"):
        await client_for(handler, timeout=5).download_blob(
            HOST, "a", Digest.of(b""), CollectingSink()
        )
    assert trio.current_time() - start == pytest.approx(5, abs=1.01)


class BrokenOff(httpx.AsyncByteStream):
    """A body that breaks off after its first bytes (the peer closed the connection)."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __aiter__(self) -> BrokenOff:
        self.sent = False
        return self

    async def __anext__(self) -> bytes:
        if self.sent:
            raise httpx.RemoteProtocolError("peer closed connection")
        self.sent = True
        return self.first


@pytest.mark.parametrize("damage", ["short", "broken off"])
async def test_a_range_answer_cut_short_is_asked_again(
    autojump_clock: trio.abc.Clock, damage: str
) -> None:
    blob = bytes(range(256)) * 40
    answers: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        wanted = blob[start : end + 1]
        answers.append(request.headers["Range"])
        if len(answers) > 1:
            return unread(206, wanted, {})
        if damage == "short":
            return unread(206, wanted[: len(wanted) // 2], {})
        return httpx.Response(206, stream=BrokenOff(wanted[:10]))

    client = client_for(handler)
    assert await client.get_blob_range(HOST, "a", Digest.of(blob), 100, 3000) == blob[100:3000]
    assert len(answers) == 2


async def test_the_calls_of_one_request_share_its_deadline(autojump_clock: trio.abc.Clock) -> None:
    """A tag list and then a manifest, each 3 s away, with a 5 s timeout: alone each is in
    time; made for one FUSE request (one cancel scope, as ``translate_errors`` opens), the
    second ends at 5 s, saying what it waited for."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3)
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["1"]})
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})  # a HEAD

    client = client_for(handler, timeout=5)
    assert await client.list_tags(HOST, "a") == ["1"]
    assert str(await client.resolve_tag(HOST, "a", "1")) == DIGEST  # 6 s in all: fine
    start = trio.current_time()
    with trio.move_on_after(5):
        assert await client.list_tags(HOST, "a") == ["1"]
        with pytest.raises(Unavailable, match="/manifests/1: no answer within 2s"):
            await client.resolve_tag(HOST, "a", "1")
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


def referrers_index(*artifact_types: str) -> bytes:
    manifests = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "digest": "sha256:" + str(n) * 64, "size": 10, "artifactType": kind}
                 for n, kind in enumerate(artifact_types, 1)]  # fmt: skip
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": manifests}).encode()  # fmt: skip


@pytest.mark.parametrize("api", [True, False])
async def test_referrers_come_from_the_api_or_its_fallback_tag(
    autojump_clock: trio.abc.Clock, api: bool
) -> None:
    """Distribution 3 answers /referrers/; 2.x has no such route (404) and the list is the
    image index tagged sha256-<hex>."""
    subject = Digest.parse(DIGEST)
    body = referrers_index("application/vnd.amazon.soci.index.v1+json", "application/x.sig")
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.path}?{request.url.query.decode()}")
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if request.url.path == f"/v2/a/referrers/{DIGEST}" and api:
            return httpx.Response(200, content=body, headers=headers)
        if request.url.path == f"/v2/a/manifests/sha256-{'1' * 64}" and not api:
            return httpx.Response(200, content=body, headers=headers)
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND"}]})

    listing = await client_for(handler).referrers(HOST, "a", subject, "application/x.t")
    assert listing is not None and len(listing.manifests) == 2
    assert listing.manifests[0].artifact_type == "application/vnd.amazon.soci.index.v1+json"
    assert seen[0] == f"/v2/a/referrers/{DIGEST}?artifactType=application%2Fx.t"
    assert len(seen) == (1 if api else 2)


async def test_no_referrers_at_all_is_none(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    assert await client_for(handler).referrers(HOST, "a", Digest.parse(DIGEST), "x/y") is None


async def test_referrers_pages_are_joined(autojump_clock: trio.abc.Clock) -> None:
    first = referrers_index("application/x.sig")
    second = referrers_index("application/x.sig", "application/vnd.amazon.soci.index.v1+json")

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if "page=2" in str(request.url):
            return httpx.Response(200, content=second, headers=headers)
        link = f'</v2/a/referrers/{DIGEST}?artifactType=x&page=2>; rel="next"'
        return httpx.Response(200, content=first, headers={**headers, "Link": link})

    listing = await client_for(handler).referrers(HOST, "a", Digest.parse(DIGEST), "x")
    assert listing is not None and len(listing.manifests) == 3


class Paced(httpx.AsyncByteStream):
    """``body`` in pieces of ``piece`` bytes, one every ``every`` seconds: a slow link."""

    def __init__(self, body: bytes, piece: int, every: float) -> None:
        self.body, self.piece, self.every = body, piece, every

    def __aiter__(self) -> Paced:  # not a generator: a reader stopping early leaves none
        return self

    async def __anext__(self) -> bytes:
        if not self.body:
            raise StopAsyncIteration
        await trio.sleep(self.every)
        piece, self.body = self.body[: self.piece], self.body[self.piece :]
        return piece


async def test_a_range_that_keeps_coming_is_read_past_the_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """4 MiB (a run of eStargz chunks) at 2 Mbit/s take 16 s: with --timeout 2 they are
    read, inside a FUSE request's deadline too, for each 2 s brings some."""
    blob = bytes(range(256)) * (16 << 10)

    async def handler(request: httpx.Request) -> httpx.Response:
        start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        return httpx.Response(206, stream=Paced(blob[start : end + 1], 128 << 10, 0.5))

    start = trio.current_time()
    with request_deadline(2) as scope:
        data = await client_for(handler, timeout=2).get_blob_range(
            HOST, "a", Digest.of(blob), 0, len(blob)
        )
    assert not scope.cancelled_caught
    assert data == blob
    assert trio.current_time() - start == pytest.approx(16, abs=0.5)


async def test_a_range_that_trickles_fails_once_within_a_bounded_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A Range answer that brings less than 64 KiB in --timeout is not waited for to the
    end, nor asked for again (it would trickle again)."""
    sent: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Range"])
        return httpx.Response(206, stream=Paced(b"x" * 4096, 1, 1.0))

    start = trio.current_time()
    with pytest.raises(Unavailable, match="too slow"):
        await client_for(handler, timeout=5).get_blob_range(HOST, "a", Digest.of(b""), 0, 4096)
    assert trio.current_time() - start == pytest.approx(5, abs=1.01)
    assert len(sent) == 1


async def test_a_whole_blob_that_keeps_coming_is_read_past_the_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A zTOC of 4 MiB (a SOCI index of a big layer) at 2 Mbit/s takes 16 s: with --timeout
    2 it is read, for each 2 s brings some; it was EIO, "no answer within 2s"."""
    blob = bytes(range(256)) * (16 << 10)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Paced(blob, 128 << 10, 0.5))

    with request_deadline(2) as scope:
        data = await client_for(handler, timeout=2).get_blob(HOST, "a", Digest.of(blob), 8 << 20)
    assert not scope.cancelled_caught
    assert data == blob


async def test_a_download_that_stops_says_for_how_long_nothing_came(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A layer's first download inside a FUSE request: 2 MiB came in 4 s, then nothing
    (the link dropped). The request ends 3 s later, and its one log line says so; it said
    "the whole body not received within 7s", as if 7 s were the timeout."""

    class Drops(Paced):
        async def __anext__(self) -> bytes:
            if not self.body:
                await trio.sleep_forever()
            return await super().__anext__()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Drops(b"x" * (2 << 20), 256 << 10, 0.5))

    with request_deadline(3), pytest.raises(Unavailable) as failure:
        await client_for(handler, timeout=3).download_blob(
            HOST, "a", Digest.of(b""), CollectingSink()
        )
    assert str(failure.value).endswith("not received within 7s, nothing for the last 3.0s")
