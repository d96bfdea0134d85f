"""The auth flow with credentials: Basic, Bearer with Basic, OAuth2 refresh tokens, token
renewal on a 401, and where credentials may go. Fake registry, autojump clock."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest
import trio

from regfs.domain.errors import AccessDenied, MalformedContent, Unavailable
from regfs.registry.auth import MAX_TOKEN_RESPONSE
from regfs.registry.authfile import Credentials
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.registry.retry_policy import MAX_ATTEMPTS
from tests.support.fake_transport import Handler, StreamingTransport

HOST = "127.0.0.1:5000"
USER = Credentials("alice", "s3cret", source="/home/alice/.docker/config.json")
BASIC = "Basic " + base64.b64encode(b"alice:s3cret").decode()


class Static:
    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self.asked: list[tuple[str, str]] = []

    async def credentials_for(self, host: str, repository: str) -> Credentials | None:
        self.asked.append((host, repository))
        return self.credentials


def client_for(handler: Handler, credentials: Credentials | None) -> RegistryClient:
    transport = StreamingTransport(handler)
    config = ClientConfig(timeout=5)
    return RegistryClient(config, Static(credentials), transport, transport.resolve)


TAGS = httpx.Response(200, json={"tags": ["1"]})


async def test_basic_credentials_are_sent_when_asked_then_up_front(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != BASIC:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return TAGS

    client = client_for(handler, USER)
    for _ in range(3):
        assert await client.list_tags(HOST, "team/app") == ["1"]
    assert len(seen) == 4  # one challenge, then Basic with every request


async def test_wrong_credentials_are_access_denied_naming_their_source(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    with pytest.raises(AccessDenied) as caught:
        await client_for(handler, USER).list_tags(HOST, "team/app")
    message = str(caught.value)
    assert "team/app" in message and HOST in message
    assert "credentials from /home/alice/.docker/config.json" in message
    assert "s3cret" not in message and "alice:" not in message


def token_registry(realm: str, tokens: list[httpx.Request], current: list[str]) -> Handler:
    """A registry that accepts only the newest token its token server issued."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            tokens.append(request)
            current.append(f"token-{len(tokens)}")
            return httpx.Response(200, json={"token": current[-1], "expires_in": 300})
        if request.headers.get("Authorization") != f"Bearer {current[-1] if current else ''}":
            challenge = f'Bearer realm="{realm}",service="reg",scope="repository:a:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return TAGS

    return handler


async def test_bearer_tokens_are_asked_for_with_basic_credentials(
    autojump_clock: trio.abc.Clock,
) -> None:
    tokens: list[httpx.Request] = []
    client = client_for(token_registry("https://auth.example/token", tokens, []), USER)
    assert await client.list_tags(HOST, "a") == ["1"]
    assert tokens[0].method == "GET" and tokens[0].headers["Authorization"] == BASIC


async def test_each_scope_a_challenge_names_is_its_own_parameter(
    autojump_clock: trio.abc.Clock,
) -> None:
    """As docker and containers/image ask a token server (distribution's reads repeated
    ``scope`` parameters; one value holding two scopes names no repository it knows)."""
    tokens: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            tokens.append(request)
            return httpx.Response(200, json={"token": "t", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer t":
            challenge = ('Bearer realm="https://auth.example/token",service="reg",'
                         'scope="repository:a:pull repository:b:pull"')  # fmt: skip
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return TAGS

    assert await client_for(handler, USER).list_tags(HOST, "a") == ["1"]
    asked = parse_qs(tokens[0].url.query.decode())
    assert asked["scope"] == ["repository:a:pull", "repository:b:pull"]
    assert asked["service"] == ["reg"]


async def test_identity_tokens_are_exchanged_with_an_oauth2_post(
    autojump_clock: trio.abc.Clock,
) -> None:
    tokens: list[httpx.Request] = []
    refresh = Credentials("", "", identity_token="refresh-123", source="auth.json")
    client = client_for(token_registry("https://auth.example/token", tokens, []), refresh)
    assert await client.list_tags(HOST, "a") == ["1"]
    (post,) = tokens
    form = parse_qs(post.content.decode())
    assert post.method == "POST" and "Authorization" not in post.headers
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["refresh-123"]
    assert form["scope"] == ["repository:a:pull"] and form["service"] == ["reg"]


async def test_credentials_never_go_to_another_host_over_plain_http(
    autojump_clock: trio.abc.Clock,
) -> None:
    tokens: list[httpx.Request] = []
    client = client_for(token_registry("http://auth.example/token", tokens, []), USER)
    assert await client.list_tags(HOST, "a") == ["1"]
    assert "Authorization" not in tokens[0].headers  # asked anonymously instead
    same_host = client_for(token_registry("http://127.0.0.1:6000/token", tokens, []), USER)
    assert await same_host.list_tags(HOST, "a") == ["1"]
    assert tokens[1].headers["Authorization"] == BASIC  # the registry's own host


async def test_a_token_refused_mid_read_is_renewed_without_failing(
    autojump_clock: trio.abc.Clock,
) -> None:
    tokens: list[httpx.Request] = []
    current: list[str] = []
    client = client_for(token_registry("https://auth.example/token", tokens, current), USER)
    assert await client.list_tags(HOST, "a") == ["1"]
    current.append("rotated")  # the registry stops accepting the cached token
    assert await client.list_tags(HOST, "a") == ["1"]
    assert len(tokens) == 2


def flaky_token_registry(failures: list[httpx.Response], tokens: list[httpx.Request]) -> Handler:
    """A token registry whose token endpoint answers with ``failures`` first."""
    registry = token_registry("https://auth.example/token", tokens, [])

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token" and failures:
            tokens.append(request)
            return failures.pop(0)
        return await registry(request)

    return handler


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(503), httpx.Response(429, headers={"Retry-After": "2"})],
    ids=["503", "429"],
)
async def test_a_failing_token_endpoint_is_retried(
    autojump_clock: trio.abc.Clock, failure: httpx.Response
) -> None:
    tokens: list[httpx.Request] = []
    client = client_for(flaky_token_registry([failure], tokens), None)
    start = trio.current_time()
    assert await client.list_tags(HOST, "a") == ["1"]
    assert len(tokens) == 2
    if "Retry-After" in failure.headers:
        assert trio.current_time() - start >= 2


async def test_a_token_endpoint_failing_for_good_is_unavailable_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    tokens: list[httpx.Request] = []
    client = client_for(flaky_token_registry([httpx.Response(502)] * 10, tokens), None)
    with pytest.raises(Unavailable, match=r"token endpoint https://auth.example/token failed"):
        await client.list_tags(HOST, "a")
    assert len(tokens) == MAX_ATTEMPTS


def registry_with_a_realm_that(fails: Handler, tokens: list[httpx.Request]) -> Handler:
    """A token registry whose token endpoint's requests go to ``fails``."""
    registry = token_registry("https://auth.example/token", tokens, [])

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            tokens.append(request)
            return await fails(request)
        return await registry(request)

    return handler


async def test_an_unreachable_token_endpoint_is_named_and_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The registry answered; its realm is what a user has to look at (a firewall that
    lets the registry through but not auth.docker.io, say)."""

    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    tokens: list[httpx.Request] = []
    client = client_for(registry_with_a_realm_that(refuse, tokens), None)
    message = rf"{HOST}: token endpoint https://auth.example/token: ConnectError"
    with pytest.raises(Unavailable, match=message):
        await client.list_tags(HOST, "a")
    assert len(tokens) == MAX_ATTEMPTS
    assert client.hosts()[HOST].unreachable_at is None  # the registry itself answers


async def test_a_silent_token_endpoint_is_named_at_the_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        raise AssertionError("unreachable")

    client = client_for(registry_with_a_realm_that(never, []), None)
    start = trio.current_time()
    message = rf"{HOST}: token endpoint https://auth.example/token: no answer within 5s"
    with pytest.raises(Unavailable, match=message):
        await client.list_tags(HOST, "a")
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


class EndlessBody(httpx.AsyncByteStream):
    """A chunked body that never ends, counting what was taken from it."""

    def __init__(self) -> None:
        self.sent = 0

    def __aiter__(self) -> EndlessBody:
        return self

    async def __anext__(self) -> bytes:
        self.sent += 64 << 10
        return b" " * (64 << 10)


async def test_an_endless_token_answer_is_read_only_up_to_its_bound(
    autojump_clock: trio.abc.Clock,
) -> None:
    body = EndlessBody()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, stream=body)
        challenge = 'Bearer realm="https://auth.example/token",service="reg"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with pytest.raises(MalformedContent, match="larger than"):
        await client_for(handler, None).list_tags(HOST, "a")
    assert body.sent <= MAX_TOKEN_RESPONSE + (64 << 10)
