"""A registry marked insecure: https without verifying its certificate first, plain http
only if its port does not speak TLS, decided by the first request and kept, as
containers/image decides it. Fake registry, autojump clock."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import Unavailable
from regfs.registry.client import RegistryClient
from tests.support.fake_transport import Handler, conf_client

BLOB = b"layer bytes" * 100
DIGEST = Digest.of(BLOB)
HOST = "reg.lan:5000"
CONF = f"""
registry = [
    {{ location = "{HOST}", insecure = true }},
    {{ prefix = "fleet.example", location = "origin.example", mirror = [
        {{ location = "mirror.lan", insecure = true }},
    ] }},
]
"""
TLS_ERROR = httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")


def client_for(handler: Handler, insecure_hosts: frozenset[str] = frozenset()) -> RegistryClient:
    return conf_client(handler, CONF, insecure_hosts)


def requests(seen: list[httpx.Request]) -> list[str]:
    return [f"{r.url.scheme}://{r.url.netloc.decode()}{r.url.path}" for r in seen]


async def test_a_registry_that_speaks_tls_is_read_over_https(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Its certificate is not checked (``tls.py``); the first request asks ``/v2/``,
    without credentials, and every later one goes over https."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v2/":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, content=BLOB)

    client = client_for(handler)
    with caplog.at_level(logging.INFO, logger="regfs.registry.schemes"):
        for _ in range(2):
            assert await client.get_blob(HOST, "a", DIGEST, len(BLOB)) == BLOB
    blob = f"https://{HOST}/v2/a/blobs/{DIGEST}"
    assert requests(seen) == [f"https://{HOST}/v2/", blob, blob]
    assert "authorization" not in seen[0].headers
    assert [r.getMessage() for r in caplog.records] == [
        f"{HOST} (insecure): https, its certificate not verified"
    ]


@pytest.mark.parametrize(
    "https_failure",
    [TLS_ERROR, httpx.ConnectError("all attempts to connect to reg.lan:5000 failed")],
    ids=["tls error", "refused"],
)
async def test_a_port_that_speaks_plain_http_is_asked_once_for_all_requests(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    https_failure: httpx.ConnectError,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await trio.sleep(0.1)  # concurrent first requests wait for the one asking
        if request.url.scheme == "https":
            raise https_failure
        return httpx.Response(200, content=b"{}" if request.url.path == "/v2/" else BLOB)

    client = client_for(handler)

    async def read() -> None:
        assert await client.get_blob(HOST, "a", DIGEST, len(BLOB)) == BLOB

    with caplog.at_level(logging.INFO, logger="regfs.registry.schemes"):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(read)
        await read()
    blob = f"http://{HOST}/v2/a/blobs/{DIGEST}"
    assert requests(seen) == [f"https://{HOST}/v2/", f"http://{HOST}/v2/", *[blob] * 6]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{HOST} (insecure): plain http (https: ")


@pytest.mark.parametrize("http_answer", ["400", "refused"])
async def test_no_registry_on_either_scheme_decides_nothing(
    autojump_clock: trio.abc.Clock, http_answer: str
) -> None:
    """A TLS port answering plain http with 400 is no plain http registry; the next
    request asks again, and finds https now."""
    seen: list[str] = []
    up = False

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        if request.url.scheme == "https":
            if not up:
                raise TLS_ERROR
            return httpx.Response(200, content=BLOB)
        if http_answer == "refused":
            raise httpx.ConnectError("refused")
        return httpx.Response(400, text="Client sent an HTTP request to an HTTPS server.")

    client = client_for(handler)
    with pytest.raises(Unavailable, match=rf"{HOST} \(insecure\): https: .*; plain http: "):
        await client.get_blob(HOST, "a", DIGEST, len(BLOB))
    up = True
    assert await client.get_blob(HOST, "a", DIGEST, len(BLOB)) == BLOB
    assert seen == ["https", "http", "https", "https"]


async def test_a_timeout_on_https_is_no_reason_for_plain_http(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        raise httpx.ConnectTimeout("timed out")

    with pytest.raises(Unavailable, match=rf"{HOST} \(insecure\): https: ConnectTimeout"):
        await client_for(handler).get_blob(HOST, "a", DIGEST, len(BLOB))
    assert seen == ["https"]


async def test_once_https_answered_plain_http_is_never_used(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Credentials never go in the clear to a host that speaks TLS: a later TLS failure
    fails the request."""
    seen: list[str] = []
    failures: list[httpx.ConnectError] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        for failure in failures:
            raise failure
        return httpx.Response(200, content=BLOB)

    client = client_for(handler)
    assert await client.get_blob(HOST, "a", DIGEST, len(BLOB)) == BLOB
    failures.append(TLS_ERROR)
    with pytest.raises(Unavailable, match=r"GET https:.*WRONG_VERSION_NUMBER"):
        await client.get_blob(HOST, "a", DIGEST, len(BLOB))
    assert set(seen) == {"https"}


async def test_an_insecure_mirror_that_cannot_be_asked_hands_over_to_the_registry(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "mirror.lan":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=BLOB)

    assert await client_for(handler).get_blob("fleet.example", "a", DIGEST, len(BLOB)) == BLOB
    assert requests(seen) == [
        "https://mirror.lan/v2/",
        "http://mirror.lan/v2/",
        f"https://origin.example/v2/a/blobs/{DIGEST}",
    ]


async def test_insecure_registry_option_and_catalog_and_loopback(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``--insecure-registry`` (``insecure_hosts``) is decided the same way, for a
    catalog too; a loopback host not marked insecure keeps plain http, unasked."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"repositories": ["a"]})

    client = client_for(handler, frozenset({"10.0.0.9:5000"}))
    assert await client.list_repositories("10.0.0.9:5000") == ["a"]
    assert await client.list_repositories("127.0.0.1:5000") == ["a"]
    assert requests(seen) == [
        "https://10.0.0.9:5000/v2/",
        "https://10.0.0.9:5000/v2/_catalog",
        "http://127.0.0.1:5000/v2/_catalog",
    ]
