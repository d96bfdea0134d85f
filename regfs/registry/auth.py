"""The registry authentication dance as an httpx auth flow: Bearer tokens and Basic.

Registry layer. A request goes out (with a cached token, or Basic credentials, when the
host is known to want them); a 401 names what the registry wants:

- ``Bearer realm,service,scope``: a token from the realm, asked for anonymously, with the
  registry's credentials (GET with Basic), or with an identity token (OAuth2 POST with
  ``grant_type=refresh_token``); then the request is sent again once. The token request
  goes out through ``TokenExchange`` (the session's client, without this flow), which
  reads at most ``MAX_TOKEN_RESPONSE`` bytes of the answer, chunked or not. Tokens are cached
  per (host, scope) until shortly before they expire; a 401 on a cached token fetches a
  new one, so an expired token never fails a read.
- ``Basic``: the registry's credentials, if there are any.

Credentials go only to the registry they belong to, and to its realm over https (or on the
registry's own host); redirects away from the registry drop ``Authorization`` (httpx). A
token request goes for the registry that named the realm (``guard.SPONSOR``), so a realm
on an address that registry may not send regfs to is refused like a redirect.
Each request records where its credentials came from (``CREDENTIALS_SOURCE``), so a
refusal can say which source was tried.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import cachetools
import httpx
import trio

from regfs.domain.challenge import Challenge, parse_challenges
from regfs.domain.errors import AccessDenied, ProtocolError, Unavailable
from regfs.registry.authfile import Credentials
from regfs.registry.credentials import CredentialProvider
from regfs.registry.endpoints import token_scope
from regfs.registry.errors import HTTPX_ERRORS, RetryLater, error_for_exception, is_temporary
from regfs.registry.guard import SPONSOR
from regfs.registry.retry_policy import Deadline

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds; the distribution spec's default for expires_in
EXPIRY_MARGIN = 10.0  # renew this long before a token expires, so none dies in flight
MAX_TOKEN_RESPONSE = 1 << 20
CLIENT_ID = "regfs"
CREDENTIALS_SOURCE = "regfs.credentials"
"""Request extension: where the credentials sent with the request came from."""
ANONYMOUS = "no credentials"

TokenExchange = Callable[[httpx.Request], Awaitable[tuple[httpx.Response, bytes]]]
"""Sends a token request and returns its response with the body read, at most
``MAX_TOKEN_RESPONSE`` bytes of it (more is an error)."""


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
    lifetime = DEFAULT_TOKEN_LIFETIME
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = float(expires_in)
    return Token(value, lifetime - min(EXPIRY_MARGIN, lifetime / 2))


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _repository_of(scope: str) -> str:
    """``repository:a/b:pull`` → ``a/b``; ``""`` for the catalog."""
    kind, _, rest = scope.partition(":")
    return rest.rpartition(":")[0] if kind == "repository" else ""


def may_send_credentials(realm: httpx.URL, registry: httpx.URL) -> bool:
    """A realm gets the registry's credentials over https, or on the registry's own host."""
    return realm.scheme == "https" or realm.host == registry.host


class RegistryAuth(httpx.Auth):
    """Adds the Authorization a registry asks for; one instance serves every host."""

    def __init__(
        self,
        credentials: CredentialProvider,
        exchange: TokenExchange,
        tokens: TokenCache | None = None,
    ) -> None:
        self._credentials = credentials
        self._exchange = exchange
        self._tokens = tokens or TokenCache()
        self._schemes: dict[str, Challenge] = {}
        """The challenge each host answered last: which Authorization to send up front."""
        self._fetching: dict[tuple[str, str], trio.Lock] = {}
        """(host, scope) whose token is being fetched: requests sent at once for a scope
        (a tag's HEAD and its tag list, ``ls -l``'s links) all get a 401 the first time,
        and take the one token the first of them fetches."""

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        host = request.url.netloc.decode()
        scope = token_scope(request.method, request.url.path) or ""
        repository = _repository_of(scope)
        request.extensions[CREDENTIALS_SOURCE] = ANONYMOUS
        known = self._schemes.get(host)
        if known is not None and known.scheme == "bearer":
            if cached := self._tokens.get(host, scope):
                request.headers["Authorization"] = f"Bearer {cached}"
        elif known is not None and known.scheme == "basic":
            credentials = await self._credentials.credentials_for(host, repository)
            if credentials is not None and credentials.username:
                self._use_basic(request, credentials)
        response = yield request
        if response.status_code != 401:
            return
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        credentials = await self._credentials.credentials_for(host, repository)
        if bearer is not None:
            self._schemes[host] = bearer
            asked_scope = bearer.params.get("scope") or scope
            realm = httpx.URL(str(bearer.realm))
            if credentials is not None and not may_send_credentials(realm, request.url):
                credentials = None  # withheld: the realm is another host over plain http
            sent = request.headers.get("Authorization")
            lock = self._fetching.setdefault((host, scope), trio.Lock())
            try:
                async with lock:
                    value = self._tokens.get(host, scope)
                    if value is None or f"Bearer {value}" == sent:  # none newer than sent
                        request_for_token = self._token_request(bearer, asked_scope, credentials)
                        if SPONSOR in request.extensions:
                            request_for_token.extensions[SPONSOR] = request.extensions[SPONSOR]
                        token_response, body = await self._ask(request_for_token, host)
                        token = _read_token(token_response, body, bearer, host, credentials)
                        self._tokens.put(host, scope, token)
                        value = token.value
            finally:
                if not lock.locked() and not lock.statistics().tasks_waiting:
                    self._fetching.pop((host, scope), None)
            request.headers["Authorization"] = f"Bearer {value}"
            request.extensions[CREDENTIALS_SOURCE] = _source(credentials)
            yield request
        elif basic is not None and credentials is not None and credentials.username:
            self._schemes[host] = basic
            self._use_basic(request, credentials)
            yield request

    async def _ask(self, request: httpx.Request, host: str) -> tuple[httpx.Response, bytes]:
        """The token endpoint's answer; its failing to answer (unreachable, reset, silent
        until the deadline) is said of it, not of the registry request that needed the
        token, which the registry did answer, and a temporary failure is retried."""
        what = f"{host}: token endpoint {request.url.copy_with(query=None)}"
        try:
            with Deadline(math.inf, what):
                return await self._exchange(request)
        except HTTPX_ERRORS as error:
            failure = error_for_exception(error, what)
            if is_temporary(error):
                raise RetryLater(failure, None) from None
            raise failure from None

    @staticmethod
    def _use_basic(request: httpx.Request, credentials: Credentials) -> None:
        request.headers["Authorization"] = _basic(credentials)
        request.extensions[CREDENTIALS_SOURCE] = _source(credentials)

    @staticmethod
    def _token_request(
        challenge: Challenge, scope: str, credentials: Credentials | None
    ) -> httpx.Request:
        service = challenge.params.get("service")
        realm = str(challenge.realm)
        if credentials is not None and credentials.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                    "client_id": CLIENT_ID, **({"service": service} if service else {}),
                    **({"scope": scope} if scope else {})}  # fmt: skip
            return httpx.Request("POST", realm, data=form)
        # one scope parameter per scope, as docker and containers/image ask (a challenge
        # may name several, space-separated); the OAuth2 form above joins them
        params: dict[str, str | list[str]] = {"scope": scope.split()}
        if service:
            params["service"] = service
        headers = {"Authorization": _basic(credentials)} if credentials else {}
        return httpx.Request("GET", realm, params=params, headers=headers)


def _source(credentials: Credentials | None) -> str:
    return f"credentials from {credentials.source}" if credentials else ANONYMOUS


def _read_token(
    response: httpx.Response,
    body: bytes,
    challenge: Challenge,
    host: str,
    credentials: Credentials | None,
) -> Token:
    realm = str(challenge.realm)
    status = response.status_code
    if status in (401, 403):
        raise AccessDenied(
            f"{host}: token endpoint {realm} refused ({status}) with {_source(credentials)}"
        )
    if status >= 500 or status == 429:
        raise RetryLater(
            Unavailable(f"{host}: token endpoint {realm} failed ({status})"),
            response.headers.get("retry-after"),
        )
    if status != 200:
        raise ProtocolError(f"{host}: token endpoint {realm} answered {status}")
    return parse_token_response(body, realm)
