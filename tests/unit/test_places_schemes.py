"""Which scheme each host's URLs get before and after an insecure host is asked
(``registry/places.py``, ``registry/schemes.py``), without a request."""

from __future__ import annotations

from pathlib import Path

from regfs.registry.config import ClientConfig
from regfs.registry.places import Places
from regfs.registry.registries_conf import merge, parse_registries_conf
from regfs.registry.tls_settings import TlsSettings

CONF = """
[[registry]]
prefix = "*.lan"
insecure = true
[[registry]]
location = "docker.io"
insecure = true
"""


async def no_probe(url: str) -> int:
    raise AssertionError("nothing may be asked")


def places(tmp_path: Path, insecure_hosts: frozenset[str]) -> Places:
    registries = merge([("registries.conf", parse_registries_conf(CONF, "registries.conf"))])
    certs = tmp_path / "certs.d"
    (certs / "tls.example").mkdir(parents=True)
    (certs / "tls.lan:5000").mkdir(parents=True)
    tls = TlsSettings([certs])
    config = ClientConfig(insecure_hosts=insecure_hosts, registries=registries, tls=tls)
    return Places(config, no_probe)


def test_insecure_hosts_are_https_until_asked_and_the_rest_as_before(tmp_path: Path) -> None:
    found = places(tmp_path, frozenset({"127.0.0.1:5001", "10.0.0.9"}))
    assert found.url("127.0.0.1:5000", "/v2/") == "http://127.0.0.1:5000/v2/"  # loopback
    assert found.url("ghcr.io", "/v2/") == "https://ghcr.io/v2/"
    assert found.url("tls.example", "/v2/") == "https://tls.example/v2/"  # certs.d
    for host in ("127.0.0.1:5001", "10.0.0.9", "reg.lan:5000", "tls.lan:5000"):
        assert found.insecure(host)
        assert found.url(host, "/v2/") == f"https://{host}/v2/"  # never plain http unasked
    assert not found.insecure("127.0.0.1:5000") and not found.insecure("tls.example")
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert found.insecure(name)  # the transport asks by the API host
    assert found.url("docker.io", "/v2/") == "https://registry-1.docker.io/v2/"
