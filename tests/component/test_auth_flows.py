"""The auth flow with credentials: Basic, Bearer with Basic, OAuth2 refresh tokens, token
renewal on a 401, and where credentials may go. Fake registry, autojump clock."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest
import trio

from regfs.domain.errors import AccessDenied
from regfs.registry.authfile import Credentials
from regfs.registry.client import ClientConfig, RegistryClient
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
    return RegistryClient(ClientConfig(timeout=5), Static(credentials), StreamingTransport(handler))


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
