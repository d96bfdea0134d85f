"""Pure parts of the registry layer: URLs, scopes, token responses, error bodies."""

from __future__ import annotations

import pytest

from regfs.domain.errors import AccessDenied, NotFound, ProtocolError, Unavailable
from regfs.registry import endpoints
from regfs.registry.auth import Token, TokenCache, parse_token_response
from regfs.registry.errors import error_codes, error_for_status, retry_after_seconds


@pytest.mark.parametrize(("host", "insecure", "url"), [
    ("127.0.0.1:5000", (), "http://127.0.0.1:5000"),
    ("localhost", (), "http://localhost"),
    ("[::1]:5000", (), "http://[::1]:5000"),
    ("ghcr.io", (), "https://ghcr.io"),
    ("docker.io", (), "https://registry-1.docker.io"),
    ("reg.lan:5000", ("reg.lan:5000",), "http://reg.lan:5000"),
])  # fmt: skip
def test_base_url(host: str, insecure: tuple[str, ...], url: str) -> None:
    assert endpoints.base_url(host, insecure) == url


def test_paths_and_scopes() -> None:
    assert endpoints.manifest_path("docker.io", "debian", "bookworm") == (
        "/v2/library/debian/manifests/bookworm")  # fmt: skip
    assert endpoints.pull_scope("/v2/a/b/manifests/x") == "repository:a/b:pull"
    assert endpoints.pull_scope("/v2/a/blobs/sha256:1") == "repository:a:pull"
    assert endpoints.pull_scope("/v2/a/tags/list") == "repository:a:pull"
    assert endpoints.pull_scope("/v2/_catalog") == "registry:catalog:*"
    assert endpoints.pull_scope("/v2/") is None


def test_token_response() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 300}', "r") == Token("t", 290)
    assert parse_token_response(b'{"access_token": "t"}', "r") == Token("t", 50)
    for bad in (b"x", b"[]", b"{}", b'{"token": ""}'):
        with pytest.raises(ProtocolError):
            parse_token_response(bad, "r")


def test_token_cache_expires_each_token_on_its_own() -> None:
    now = [0.0]
    cache = TokenCache(timer=lambda: now[0])
    cache.put("h", "s1", Token("short", 10))
    cache.put("h", "s2", Token("long", 100))
    now[0] = 50
    assert cache.get("h", "s1") is None
    assert cache.get("h", "s2") == "long"


def test_error_classification() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    assert error_codes(body) == "MANIFEST_UNKNOWN: manifest unknown"
    assert error_codes(b"<html>oops") == "<html>oops"
    page = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\x1b[2J</body>"
    one_line = "<html> <head><title>502 Bad Gateway</title></head> <body> [2J</body>"
    assert error_codes(page) == one_line
    forged = b'{"errors":[{"code":"DENIED","message":"no\\n2026-12-07 WARNING forged"}]}'
    assert error_codes(forged) == "DENIED: no 2026-12-07 WARNING forged"
    assert isinstance(error_for_status(404, body, "GET x"), NotFound)
    assert isinstance(error_for_status(401, b"", "GET x"), AccessDenied)
    assert isinstance(error_for_status(403, b"", "GET x"), AccessDenied)
    assert isinstance(error_for_status(503, b"", "GET x"), Unavailable)
    assert isinstance(error_for_status(429, b"", "GET x"), Unavailable)
    assert isinstance(error_for_status(400, b"", "GET x"), ProtocolError)
    assert isinstance(error_for_status(501, b"", "GET x"), ProtocolError)  # not a registry down
    assert isinstance(error_for_status(507, b"", "GET x"), Unavailable)
    assert "GET x: HTTP 404 (MANIFEST_UNKNOWN" in str(error_for_status(404, body, "GET x"))


def test_retry_after() -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds("2", 30, now) == 2
    assert retry_after_seconds("99", 30, now) == 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", 30, now) == 5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 -0000", 30, now) == 5  # no zone
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", 30, now) == 0  # passed
    assert retry_after_seconds("Wed, 21 Oct 2015 09:28:00 GMT", 30, now) == 30
    for unreadable in (None, "soon", "", "nan", "Wed, 99 Foo 2015 07:28:00 GMT"):
        assert retry_after_seconds(unreadable, 30, now) is None
