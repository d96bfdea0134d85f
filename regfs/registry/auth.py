"""The registry authentication dance as an httpx auth flow: Bearer tokens and Basic.

Registry layer. A request goes out (with a cached token when the host is known to want
one); a 401 carrying ``WWW-Authenticate: Bearer realm,service,scope`` makes the flow ask
the realm for a token (anonymously, or with the host's credentials) and send the request
again once. Tokens are cached per (host, scope) until shortly before they expire.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import cachetools
import httpx
import trio

from regfs.domain.challenge import Challenge, parse_challenges
from regfs.domain.errors import AccessDenied, ProtocolError, Unavailable
from regfs.registry.credentials import BasicCredentials, CredentialProvider
from regfs.registry.endpoints import pull_scope

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds; the distribution spec's default for expires_in
EXPIRY_MARGIN = 10.0  # renew this long before a token expires, so none dies in flight
MAX_TOKEN_RESPONSE = 1 << 20


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    lifetime: float


class TokenCache:
    """Tokens by (host, scope), each dropped when its own lifetime ends.

    Time is trio's clock (monotonic), so tests can let tokens expire on a fake clock.
    """

    def __init__(self, maxsize: int = 4096, timer: Callable[[], float] = trio.current_time) -> None:
        self._tokens: cachetools.TLRUCache[tuple[str, str], Token] = cachetools.TLRUCache(
            maxsize, ttu=lambda _key, token, now: now + token.lifetime, timer=timer
        )

    def get(self, host: str, scope: str) -> str | None:
        token = self._tokens.get((host, scope))
        return token.value if token else None

    def put(self, host: str, scope: str, token: Token) -> None:
        self._tokens[(host, scope)] = token


def parse_token_response(body: bytes, realm: str) -> Token:
    """Read ``{"token"|"access_token": …, "expires_in": …}`` from a token endpoint."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError(f"token endpoint {realm} answered with invalid JSON") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"token endpoint {realm} answered with a non-object")
    value = document.get("token") or document.get("access_token")
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"token endpoint {realm} answered without a token")
    expires_in = document.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else DEFAULT_TOKEN_LIFETIME
    return Token(value, max(lifetime, DEFAULT_TOKEN_LIFETIME) - EXPIRY_MARGIN)


def _basic(credentials: BasicCredentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


class RegistryAuth(httpx.Auth):
    """Adds the Authorization a registry asks for; one instance serves every host."""

    def __init__(self, credentials: CredentialProvider, tokens: TokenCache | None = None) -> None:
        self._credentials = credentials
        self._tokens = tokens or TokenCache()
        self._bearer_hosts: dict[str, Challenge] = {}

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        host = request.url.netloc.decode()
        scope = pull_scope(request.url.path) or ""
        if host in self._bearer_hosts and (cached := self._tokens.get(host, scope)):
            request.headers["Authorization"] = f"Bearer {cached}"
        response = yield request
        if response.status_code != 401:
            return
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        credentials = await self._credentials.credentials_for(host)
        if bearer is not None:
            self._bearer_hosts[host] = bearer
            scope = bearer.params.get("scope") or scope
            token_request = self._token_request(bearer, scope, credentials)
            token_response = yield token_request
            token = await self._read_token(token_response, bearer, host)
            self._tokens.put(host, pull_scope(request.url.path) or "", token)
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request
        elif credentials is not None and any(c.scheme == "basic" for c in challenges):
            request.headers["Authorization"] = _basic(credentials)
            yield request

    @staticmethod
    def _token_request(
        challenge: Challenge, scope: str, credentials: BasicCredentials | None
    ) -> httpx.Request:
        params = {"scope": scope} if scope else {}
        if service := challenge.params.get("service"):
            params["service"] = service
        headers = {"Authorization": _basic(credentials)} if credentials else {}
        return httpx.Request("GET", str(challenge.realm), params=params, headers=headers)

    @staticmethod
    async def _read_token(response: httpx.Response, challenge: Challenge, host: str) -> Token:
        realm = str(challenge.realm)
        body = await response.aread()  # httpx reads it again after the flow: keep it cached
        if len(body) > MAX_TOKEN_RESPONSE:
            raise ProtocolError(f"{host}: token endpoint {realm} sent more than 1 MiB")
        if response.status_code in (401, 403):
            raise AccessDenied(f"{host}: token endpoint {realm} refused ({response.status_code})")
        if response.status_code >= 500 or response.status_code == 429:
            raise Unavailable(f"{host}: token endpoint {realm} failed ({response.status_code})")
        if response.status_code != 200:
            raise ProtocolError(f"{host}: token endpoint {realm} answered {response.status_code}")
        return parse_token_response(body, realm)
