"""Where a registry may send regfs: redirects, foreign layers' URLs, token realms and upload
locations on loopback, private or link-local addresses are refused unless the registry is
on such an address itself or the user allowed the host. Fake registry and DNS (each name
is where ``StreamingTransport.addresses`` says, else on a public address), autojump clock;
the last test connects for real, on loopback."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, Unavailable
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.registry.errors import describe
from regfs.registry.guard import PINNED, RESOLVED_TTL
from regfs.registry.registries_conf import merge, parse_registries_conf
from regfs.registry.tls import PerHostTransport
from regfs.registry.tls_settings import TlsSettings
from tests.support.fake_transport import PUBLIC_ADDRESS, CollectingSink, StreamingTransport
from tests.support.pki import Authority

BLOB = bytes(range(256)) * 16
DIGEST = Digest.of(BLOB)
PUBLIC = "origin.example"
LOOPBACK = "127.0.0.1:5000"
REGISTRIES = (PUBLIC, LOOPBACK, "registry.lan", "flappy.example")


class Registry:
    """A registry that answers blob GETs with a 307 to ``target`` (404 without one), and
    the servers elsewhere (which serve the blob, ranges too); every request the transport
    was handed is in ``seen``."""

    def __init__(
        self, target: str | None = None, addresses: dict[str, list[str]] | None = None
    ) -> None:
        self.target = target
        self.seen: list[httpx.Request] = []
        self.transport = StreamingTransport(self.handle, addresses)

    def client(self, config: ClientConfig | None = None) -> RegistryClient:
        config = config or ClientConfig(timeout=5)
        return RegistryClient(config, transport=self.transport, resolver=self.transport.resolve)

    def elsewhere(self) -> list[httpx.Request]:
        """The requests sent past the registry."""
        return [r for r in self.seen if r.url.netloc.decode() not in REGISTRIES]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.netloc.decode() not in REGISTRIES:
            return ranged(request)
        if "/blobs/" in request.url.path and self.target is not None:
            return httpx.Response(307, headers={"Location": f"{self.target}?X-Amz-Signature=s"})
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND"}]})


def ranged(request: httpx.Request) -> httpx.Response:
    if "Range" not in request.headers:
        return httpx.Response(200, content=BLOB)
    start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
    headers = {"Content-Range": f"bytes {start}-{end}/{len(BLOB)}"}
    return httpx.Response(206, content=BLOB[start : end + 1], headers=headers)


@pytest.mark.parametrize(
    ("target", "addresses", "reason"),
    [
        (
            "http://169.254.169.254/latest/meta-data/",
            {},
            "169.254.169.254 is a link-local address, and origin.example is on a public address",
        ),
        ("http://127.0.0.1:8080/admin", {}, "127.0.0.1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", {}, "::ffff:7f00:1 is a loopback address"),
        ("http://0.0.0.0:2375/containers/json", {}, "0.0.0.0 is a special-purpose address"),
        (  # a name is resolved: what it names counts, not how it is spelt
            "https://cdn.evil.example/blob",
            {"cdn.evil.example": ["10.0.0.7"]},
            "10.0.0.7 is a private address",
        ),
        (  # every address it resolves to, not only the first
            "https://cdn.evil.example/blob",
            {"cdn.evil.example": [PUBLIC_ADDRESS, "fd00::7"]},
            "fd00::7 is a private address",
        ),
        ("http://metadata.google.internal/", {"metadata.google.internal": ["169.254.169.254"]},
         "169.254.169.254 is a link-local address"),
    ],
)  # fmt: skip
async def test_a_public_registry_cannot_send_regfs_inward(
    autojump_clock: trio.abc.Clock, target: str, addresses: dict[str, list[str]], reason: str
) -> None:
    registry = Registry(target, addresses)
    with pytest.raises(AccessDenied) as caught:
        await registry.client().get_blob_range(PUBLIC, "a", DIGEST, 0, 10)
    message = str(caught.value)  # the line the FUSE layer logs
    host = httpx.URL(target).host
    assert message.startswith(f"GET https://{PUBLIC}/v2/a/blobs/{DIGEST}: refused to send to ")
    assert reason in message and f"--allow-redirect-to {host}" in message
    assert "X-Amz-Signature" not in message
    assert registry.elsewhere() == []  # refused before anything was sent there
    assert len(registry.seen) == 1  # and not asked again: a refusal is not temporary


async def test_a_loopback_registry_may_send_regfs_to_loopback_and_the_lan(
    autojump_clock: trio.abc.Clock,
) -> None:
    for target, addresses, pinned in [
        ("http://127.0.0.1:9000/blob", {}, ("127.0.0.1",)),
        ("http://localhost:9000/blob", {"localhost": ["::1", "127.0.0.1"]}, ("::1", "127.0.0.1")),
        ("http://minio.lan:9000/blob", {"minio.lan": ["192.168.1.20"]}, ("192.168.1.20",)),
        ("https://cdn.example/blob", {}, (PUBLIC_ADDRESS,)),
    ]:
        registry = Registry(target, addresses)
        assert await registry.client().get_blob_range(LOOPBACK, "a", DIGEST, 5, 50) == BLOB[5:50]
        (hop,) = registry.elsewhere()
        assert hop.extensions[PINNED] == pinned  # connected only where it was checked
        assert "Authorization" not in hop.headers and hop.headers["Range"] == "bytes=5-49"
    registry = Registry("http://169.254.169.254/", {})  # but not to the metadata service
    with pytest.raises(AccessDenied, match=r"and 127\.0\.0\.1:5000 is on a loopback address"):
        await registry.client().get_blob_range(LOOPBACK, "a", DIGEST, 0, 10)


async def test_a_registry_on_the_lan_may_send_regfs_to_the_lan_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    lan = {"registry.lan": ["10.0.0.5"], "minio.lan": ["10.0.0.6"]}
    registry = Registry("http://minio.lan:9000/blob", lan)
    client = registry.client()
    sink = CollectingSink()
    await client.download_blob("registry.lan", "a", DIGEST, sink)
    assert bytes(sink.received) == BLOB
    registry.target = "http://127.0.0.1:9000/blob"
    with pytest.raises(AccessDenied, match=r"and registry\.lan is on a private address"):
        await client.download_blob("registry.lan", "a", DIGEST, sink)


async def test_each_hop_speaks_for_the_next_one(autojump_clock: trio.abc.Clock) -> None:
    """A loopback registry may send regfs to the LAN, but a public CDN it redirects to
    may not: a chain vouches only for what every answer along it vouches for."""
    seen: list[str] = []
    hops = {"127.0.0.1:5000": "https://cdn.example/a", "cdn.example": "http://10.0.0.7/b"}

    async def handler(request: httpx.Request) -> httpx.Response:
        netloc = request.url.netloc.decode()
        seen.append(netloc)
        if netloc in hops:
            return httpx.Response(307, headers={"Location": hops[netloc]})
        return ranged(request)

    transport = StreamingTransport(handler)
    client = RegistryClient(ClientConfig(timeout=5), None, transport, transport.resolve)
    message = "and the answers for 127.0.0.1:5000 came from loopback and public addresses"
    with pytest.raises(AccessDenied, match=message):
        await client.get_blob(LOOPBACK, "a", DIGEST, len(BLOB))
    assert seen == ["127.0.0.1:5000", "cdn.example"]
    hops["127.0.0.1:5000"] = "http://127.0.0.1:9000/a"  # a loopback hop on the way is fine
    hops["127.0.0.1:9000"] = "http://10.0.0.7/b"
    assert await client.get_blob(LOOPBACK, "a", DIGEST, len(BLOB)) == BLOB


async def test_hosts_the_user_allowed_are_not_checked(autojump_clock: trio.abc.Clock) -> None:
    conf = '[[registry]]\nlocation = "minio.lan:9000"\ninsecure = true\n'
    registries = merge([("registries.conf", parse_registries_conf(conf, "registries.conf"))])
    for config in [
        ClientConfig(timeout=5, redirect_hosts=frozenset({"minio.lan"})),
        ClientConfig(timeout=5, redirect_hosts=frozenset({"minio.lan:9000"})),
        ClientConfig(timeout=5, insecure_hosts=frozenset({"minio.lan:9000"})),
        ClientConfig(timeout=5, registries=registries),
    ]:
        registry = Registry("http://minio.lan:9000/blob", {"minio.lan": ["10.0.0.6"]})
        assert await registry.client(config).get_blob(PUBLIC, "a", DIGEST, len(BLOB)) == BLOB
        (hop,) = registry.elsewhere()
        assert PINNED not in hop.extensions  # sent as any request: the user's word
    registry = Registry("http://minio.lan:9999/blob", {"minio.lan": ["10.0.0.6"]})
    config = ClientConfig(timeout=5, redirect_hosts=frozenset({"minio.lan:9000"}))
    with pytest.raises(AccessDenied, match=r"refused to send to minio\.lan:9999"):
        await registry.client(config).get_blob(PUBLIC, "a", DIGEST, len(BLOB))


async def test_a_registry_seen_at_two_kinds_of_address_vouches_for_public_ones_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    """DNS rebinding of the registry's own name: reached once at a public address, then
    at loopback, its redirects to loopback are refused."""
    registry = Registry("http://127.0.0.1:9000/blob", {"flappy.example": [PUBLIC_ADDRESS]})
    client = registry.client()
    with pytest.raises(AccessDenied, match=r"and flappy\.example is on a public address"):
        await client.get_blob("flappy.example", "a", DIGEST, len(BLOB))
    registry.transport.addresses["flappy.example"] = ["127.0.0.1"]
    with pytest.raises(AccessDenied, match="came from loopback and public addresses"):
        await client.get_blob("flappy.example", "a", DIGEST, len(BLOB))


async def test_foreign_layer_urls_are_checked_for_the_registry_that_named_them(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry()
    client = registry.client()
    urls = ("http://169.254.169.254/layer.tgz", "https://cdn.example/layer.tgz")
    assert await client.get_blob_range(PUBLIC, "a", DIGEST, 0, 10, urls=urls) == BLOB[:10]
    assert [r.url.host for r in registry.elsewhere()] == ["cdn.example"]  # the first refused
    with pytest.raises(AccessDenied, match=r"GET http://169\.254\.169\.254/layer\.tgz: refused"):
        await client.get_blob_range(PUBLIC, "a", DIGEST, 0, 10, urls=urls[:1])
    local = await client.get_blob_range(LOOPBACK, "a", DIGEST, 0, 10, urls=("http://[::1]/l",))
    assert local == BLOB[:10]  # a loopback registry's own loopback URLs


async def test_a_token_realm_is_checked_for_the_registry_that_named_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    realms: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            realms.append(request)
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("Authorization") != "Bearer t":
            challenge = f'Bearer realm="http://{realm}/token",service="reg"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json={"tags": ["1"]})

    transport = StreamingTransport(handler, {"auth.lan": ["10.1.1.1"]})
    client = RegistryClient(ClientConfig(timeout=5), None, transport, transport.resolve)
    realm = "auth.lan"
    with pytest.raises(AccessDenied, match=r"tags/list: refused to send to auth\.lan: 10\.1"):
        await client.list_tags(PUBLIC, "a")
    assert realms == []
    realm = "127.0.0.1:5001"  # the token server beside a loopback registry
    assert await client.list_tags(LOOPBACK, "a") == ["1"]
    assert realms[0].extensions[PINNED] == ("127.0.0.1",)


async def test_an_upload_location_is_checked_for_the_registry_that_gave_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry()
    with pytest.raises(AccessDenied, match=r"refused to send to 169\.254\.169\.254"):
        await registry.client().send_to_origin("PUT", PUBLIC, "http://169.254.169.254/u", {})


async def test_a_target_name_is_resolved_once_a_minute(autojump_clock: trio.abc.Clock) -> None:
    registry = Registry("https://cdn.example/blob")
    lookups: list[str] = []

    async def counting(host: str, port: int | None) -> list[str]:
        lookups.append(host)
        return await registry.transport.resolve(host, port)

    config = ClientConfig(timeout=5)
    client = RegistryClient(config, transport=registry.transport, resolver=counting)
    for start in range(0, 100, 10):  # the Range reads of one blob
        await client.get_blob_range(PUBLIC, "a", DIGEST, start, start + 10)
    assert lookups == ["cdn.example"]
    await trio.sleep(RESOLVED_TTL)
    registry.transport.addresses["cdn.example"] = ["10.9.9.9"]  # now it names the LAN
    with pytest.raises(AccessDenied, match=r"10\.9\.9\.9 is a private address"):
        await client.get_blob_range(PUBLIC, "a", DIGEST, 0, 10)
    assert lookups == ["cdn.example"] * 2


async def test_a_target_name_that_does_not_resolve_fails_as_unreachable(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = Registry("https://gone.example/blob")

    async def nowhere(host: str, port: int | None) -> list[str]:
        raise OSError(-2, "Name or service not known")

    client = RegistryClient(ClientConfig(timeout=5), transport=registry.transport, resolver=nowhere)
    with pytest.raises(Unavailable, match=r"gone\.example: Name or service not known"):
        await client.get_blob(PUBLIC, "a", DIGEST, len(BLOB))


class Recording(BaseHTTPRequestHandler):
    """Answers ``ok`` and records each request's ``Host``."""

    hosts: list[str | None]

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ThreadingHTTPServer, Authority, list[str | None]]]:
    """A loopback server (started by ``serve``), a CA for its certificate, and the
    ``Host`` of each request it answered."""
    hosts: list[str | None] = []
    handler = type("Handler", (Recording,), {"hosts": hosts})
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    authority = Authority(tmp_path / "ca")
    yield http, authority, hosts
    http.shutdown()
    http.server_close()


def serve(http: ThreadingHTTPServer, authority: Authority | None) -> None:
    """Start ``http``: plain, or TLS with a certificate of ``authority`` that names
    ``pinned.test`` only (no address)."""
    if authority is not None:
        issued = authority.issue("pinned", server=True, names=("pinned.test",))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(issued.certificate, issued.key)
        http.socket = context.wrap_socket(http.socket, server_side=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()


def get_pinned(transport: PerHostTransport, url: str, pinned: tuple[str, ...]) -> bytes:
    """GET ``url`` through ``transport`` pinned to ``pinned``, on a trio loop of its own
    (real sockets: an autojump clock would fire the timeouts at once)."""

    async def get() -> bytes:
        try:
            request = httpx.Request("GET", url, extensions={PINNED: pinned})
            response = await transport.handle_async_request(request)
            return await response.aread()
        finally:
            await transport.aclose()

    return trio.run(get)


def test_a_pinned_request_connects_to_the_checked_address_only(
    server: tuple[ThreadingHTTPServer, Authority, list[str | None]],
) -> None:
    """``pinned.invalid`` cannot resolve, and nothing listens on the first pinned address:
    the request still arrives, at the second, with its name as Host."""
    http, _, hosts = server
    serve(http, None)
    port = http.server_address[1]
    transport = PerHostTransport(TlsSettings([]))
    url = f"http://pinned.invalid:{port}/x"
    assert get_pinned(transport, url, ("127.0.0.2", "127.0.0.1")) == b"ok"
    assert hosts == [f"pinned.invalid:{port}"]


def test_a_pinned_https_request_checks_the_certificate_against_the_name(
    server: tuple[ThreadingHTTPServer, Authority, list[str | None]], tmp_path: Path
) -> None:
    """The certificate names ``pinned.test`` and no address: it passes only if TLS checks
    the name, as it would without pinning; for another name, it fails."""
    http, authority, hosts = server
    serve(http, authority)
    port = http.server_address[1]
    for name in ("pinned.test", "other.test"):
        (tmp_path / "certs.d" / f"{name}:{port}").mkdir(parents=True)
        (tmp_path / "certs.d" / f"{name}:{port}" / "ca.crt").write_bytes(
            authority.ca_file.read_bytes()
        )
    tls = TlsSettings([tmp_path / "certs.d"])
    url = f"https://pinned.test:{port}/x"
    assert get_pinned(PerHostTransport(tls), url, ("127.0.0.1",)) == b"ok"
    assert hosts == [f"pinned.test:{port}"]
    with pytest.raises(httpx.ConnectError) as caught:
        get_pinned(PerHostTransport(tls), f"https://other.test:{port}/x", ("127.0.0.1",))
    assert describe(caught.value).startswith("TLS: Hostname mismatch")


def test_an_insecure_registry_s_certificate_is_not_checked(
    server: tuple[ThreadingHTTPServer, Authority, list[str | None]],
) -> None:
    """Marked insecure, a registry whose certificate is of an unknown CA and names
    another host is read over https; not marked, it fails as before."""
    http, authority, hosts = server
    serve(http, authority)
    port = http.server_address[1]
    url = f"https://other.test:{port}/x"
    insecure = PerHostTransport(TlsSettings([]), lambda host: host == f"other.test:{port}")
    assert get_pinned(insecure, url, ("127.0.0.1",)) == b"ok"
    assert hosts == [f"other.test:{port}"]
    with pytest.raises(httpx.ConnectError) as caught:
        get_pinned(PerHostTransport(TlsSettings([])), url, ("127.0.0.1",))
    assert describe(caught.value).startswith("TLS: ")
