"""RegistryClient against an in-process fake registry (httpx.MockTransport) on a fake clock."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, MalformedContent, ProtocolError, Unavailable
from regfs.registry.client import MAX_ATTEMPTS, ClientConfig, RegistryClient

HOST = "127.0.0.1:5000"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def client_for(handler: Handler, timeout: float = 5) -> RegistryClient:
    return RegistryClient(ClientConfig(timeout=timeout), transport=httpx.MockTransport(handler))


def catalog(*names: str, link: str | None = None) -> httpx.Response:
    headers = {"Link": link} if link else {}
    return httpx.Response(200, json={"repositories": list(names)}, headers=headers)


async def test_temporary_failures_are_retried() -> None:
    answers = [httpx.Response(503), httpx.Response(502), catalog("a")]
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)

    assert await client_for(handler).list_repositories(HOST) == ["a"]
    assert len(requests) == 3


async def test_persistent_failure_gives_up_after_a_bounded_number_of_attempts() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="boom")

    with pytest.raises(Unavailable, match="HTTP 500"):
        await client_for(handler).list_repositories(HOST)
    assert calls == MAX_ATTEMPTS


async def test_connection_errors_are_retried_then_reported() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(Unavailable, match="ConnectError: Connection refused"):
        await client_for(handler).list_repositories(HOST)


async def test_retry_after_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "3"}), catalog("a")]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    start = trio.current_time()
    assert await client_for(handler, timeout=30).list_repositories(HOST) == ["a"]
    assert trio.current_time() - start == pytest.approx(3, abs=0.01)


async def test_a_stalled_registry_fails_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return catalog()

    start = trio.current_time()
    with pytest.raises(Unavailable, match="no answer within 5s"):
        await client_for(handler).list_repositories(HOST)
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_pages_are_followed_and_loops_refused() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "last" not in request.url.params:
            return catalog("a", "b", link='</v2/_catalog?last=b>; rel="next"')
        if request.url.params["last"] == "b":
            return catalog("c", link=f'<http://{HOST}/v2/_catalog?last=c>; rel="next"')
        return catalog("d", link='</v2/_catalog?last=c>; rel="next"')  # points back

    with pytest.raises(ProtocolError, match="pagination loops"):
        await client_for(handler).list_repositories(HOST)


async def test_tags_null_means_no_tags() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "a", "tags": None})

    assert await client_for(handler).list_tags(HOST, "a") == []


def bearer_registry(token_requests: list[httpx.Request], grant: bool = True) -> Handler:
    challenge = 'Bearer realm="http://auth.test/token",service="reg",scope="repository:a:pull"'

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_requests.append(request)
            return httpx.Response(200, json={"token": "granted" if grant else "useless"})
        if request.headers.get("Authorization") != "Bearer granted":
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json={"tags": ["1"]})

    return handler


async def test_bearer_tokens_are_fetched_once_and_reused() -> None:
    token_requests: list[httpx.Request] = []
    client = client_for(bearer_registry(token_requests))
    for _ in range(3):
        assert await client.list_tags(HOST, "a") == ["1"]
    assert len(token_requests) == 1
    assert token_requests[0].url.params["scope"] == "repository:a:pull"
    assert token_requests[0].url.params["service"] == "reg"
    assert "Authorization" not in token_requests[0].headers  # anonymous


async def test_a_token_that_does_not_help_is_access_denied() -> None:
    client = client_for(bearer_registry([], grant=False))
    with pytest.raises(AccessDenied, match="HTTP 401"):
        await client.list_tags(HOST, "a")


async def test_manifest_bytes_must_match_the_registry_header() -> None:
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


async def test_resolve_tag_falls_back_to_get_without_the_header() -> None:
    body = json.dumps({"schemaVersion": 2}).encode()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"" if request.method == "HEAD" else body)

    assert await client_for(handler).resolve_tag(HOST, "a", "1") == Digest.of(body)


async def test_oversized_responses_are_refused() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 100)

    with pytest.raises(MalformedContent, match="larger than 10 bytes"):
        await client_for(handler).get_blob(HOST, "a", Digest.of(b""), max_bytes=10)


async def test_redirects_to_another_origin_drop_authorization() -> None:
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
