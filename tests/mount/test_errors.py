"""What a user sees when names are wrong or registries misbehave: errno, time, one log line."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from regfs.registry.host_stats import SILENT_PROBE
from tests.mount.conftest import Pushed
from tests.support import schema1
from tests.support.fake_registry import FakeRegistry, Reply
from tests.support.mount import Mount
from tests.support.net import free_port

pytestmark = pytest.mark.mount

TIMEOUT = 5  # the session mount's --timeout
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def oci_manifest(config: bytes = CONFIG) -> bytes:
    descriptor = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        "size": len(config),
    }
    return json.dumps({"schemaVersion": 2, "config": descriptor, "layers": []}).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect_errno(expected: int, action: object, mount: Mount | None = None) -> float:
    """Run ``action`` and return how long it took to fail with ``expected``; otherwise the
    failure shows the end of ``mount``'s log (a rare ENOENT once met in a full run)."""
    start = time.monotonic()
    with pytest.raises(OSError) as caught:
        action()  # type: ignore[operator]
    shown = "" if mount is None else "\n" + mount.log()[-3000:]
    assert caught.value.errno == expected, f"{caught.value}{shown}"
    return time.monotonic() - start


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    registry = FakeRegistry({})
    yield registry
    registry.stop()


def test_unknown_names_are_enoent(mnt: Mount, pushed: Pushed) -> None:
    host = mnt / pushed.registry.host
    expect_errno(errno.ENOENT, lambda: os.stat(host / "no/such/repository"))
    expect_errno(errno.ENOENT, lambda: os.stat(host / "library/debian/no-such-tag"))
    expect_errno(errno.ENOENT, lambda: os.stat(host / "library/debian" / ("sha256-" + "0" * 64)))
    expect_errno(errno.ENOENT, lambda: os.stat(host / "library/debian/bookworm/nothing"))
    expect_errno(errno.ENOENT, lambda: os.stat(mnt / "not-a-host"))


def test_the_mount_is_read_only(mnt: Mount, pushed: Pushed) -> None:
    image = mnt / pushed.registry.host / "library/debian/bookworm"
    expect_errno(errno.EROFS, lambda: (image / "manifest").write_bytes(b""))
    expect_errno(errno.EROFS, lambda: os.mkdir(image / "new"))
    expect_errno(errno.EROFS, lambda: os.unlink(image / "manifest"))
    expect_errno(errno.EROFS, lambda: os.setxattr(image, "user.x", b"1"))


def test_unreachable_registry_is_eio_quickly(mnt: Mount) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    mnt.allow_log(rf"{host}/v2/_catalog: ConnectError")
    took = expect_errno(errno.EIO, lambda: os.listdir(mnt / host))
    assert took < TIMEOUT
    assert host in mnt.log()


def test_stalled_registry_is_eio_within_the_timeout(mnt: Mount) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host = f"127.0.0.1:{server.getsockname()[1]}"  # accepts, never answers
        mnt.allow_log(rf"{host}: /v2/_catalog: no answer within",
                      rf"{host} answered nothing in \S+s, nor in")  # fmt: skip
        took = expect_errno(errno.EIO, lambda: os.listdir(mnt / host))
        then = expect_errno(errno.EIO, lambda: os.stat(mnt / host / "some/app/1"))
    assert TIMEOUT - 0.5 < took < TIMEOUT + 3
    assert then < SILENT_PROBE + 1  # a registry that answered nothing: seconds, no timeout
    assert f"{host}: /v2/_catalog: no answer within {TIMEOUT}s" in mnt.log()


def test_server_errors_are_eio_and_the_daemon_survives(
    mnt: Mount, pushed: Pushed, fake: FakeRegistry
) -> None:
    fake.routes["/v2/_catalog"] = Reply(500, b"internal error")
    mnt.allow_log(rf"{fake.host}/v2/_catalog: HTTP 500")
    expect_errno(errno.EIO, lambda: os.listdir(mnt / fake.host))
    assert len(fake.requests) > 1  # retried before giving up
    assert os.listdir(mnt / pushed.registry.host / "library/debian") == ["bookworm"]


def test_malformed_manifest_is_eio_with_a_log_line(mnt: Mount, fake: FakeRegistry) -> None:
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["bad/json","not/image"]}')
    garbage = b'{"schemaVersion": 2, "layers": [tru'
    mnt.allow_log(rf"{fake.host}/bad/json@.*: manifest is not valid JSON",
                  rf"{fake.host}/not/image@.*: not an image manifest")  # fmt: skip
    not_image = b'{"schemaVersion": 2, "mediaType": "text/plain"}'
    for repository, body in (("bad/json", garbage), ("not/image", not_image)):
        fake.routes[f"/v2/{repository}/tags/list"] = Reply(200, b'{"tags":["1"]}')
        fake.routes[f"/v2/{repository}/manifests/1"] = Reply(
            200, body, {"Docker-Content-Digest": digest_of(body)}
        )
        fake.routes[f"/v2/{repository}/manifests/{digest_of(body)}"] = Reply(200, body)
        expect_errno(errno.EIO, lambda r=repository: os.listdir(mnt / fake.host / r / "1"))
    assert "manifest is not valid JSON" in mnt.log()
    assert "not an image manifest or index: 'text/plain'" in mnt.log()


def test_manifest_that_does_not_match_its_digest_is_eio(mnt: Mount, fake: FakeRegistry) -> None:
    honest, forged = oci_manifest(), oci_manifest(b"{}")
    mnt.allow_log(rf"{fake.host}/evil/img@{digest_of(honest)}: manifest bytes hash to")
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["evil/img"]}')
    fake.routes[f"/v2/evil/img/manifests/{digest_of(honest)}"] = Reply(200, forged)
    image = mnt / fake.host / "evil/img" / digest_of(honest).replace(":", "-")
    expect_errno(errno.EIO, lambda: os.listdir(image))
    assert f"{fake.host}/evil/img@{digest_of(honest)}: manifest bytes hash to" in mnt.log()


def test_tag_whose_bytes_contradict_the_registry_header_is_eio(
    mnt: Mount, fake: FakeRegistry
) -> None:
    body = oci_manifest()
    mnt.allow_log(rf"{fake.host}/liar/img@.*but the registry says")
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["liar/img"]}')
    fake.routes["/v2/liar/img/tags/list"] = Reply(200, b'{"tags":["1"]}')
    fake.routes["/v2/liar/img/manifests/1"] = Reply(200, body, {"Content-Type": OCI_MANIFEST})
    fake.routes[f"/v2/liar/img/manifests/{digest_of(body)}"] = Reply(
        200, body, {"Docker-Content-Digest": "sha256:" + "1" * 64}
    )
    expect_errno(errno.EIO, lambda: os.listdir(mnt / fake.host / "liar/img/1"))
    assert "but the registry says sha256:1111" in mnt.log()


def test_corrupted_config_blob_is_eio(mnt: Mount, fake: FakeRegistry) -> None:
    body = oci_manifest()
    mnt.allow_log(rf"{fake.host}/corrupt/img@{digest_of(CONFIG)}: config blob")
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["corrupt/img"]}')
    fake.routes[f"/v2/corrupt/img/manifests/{digest_of(body)}"] = Reply(200, body)
    fake.routes[f"/v2/corrupt/img/blobs/{digest_of(CONFIG)}"] = Reply(200, CONFIG[:-1] + b"!")
    config = mnt / fake.host / "corrupt/img" / digest_of(body).replace(":", "-") / "config"
    expect_errno(errno.EIO, config.read_bytes)
    assert f"corrupt/img@{digest_of(CONFIG)}: config blob" in mnt.log()


def test_refused_catalog_still_allows_names(mnt: Mount, fake: FakeRegistry) -> None:
    body = oci_manifest()
    fake.routes["/v2/_catalog"] = Reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
    fake.routes["/v2/owner/img/tags/list"] = Reply(200, b'{"tags":["v1"]}')
    fake.routes["/v2/owner/img/manifests/v1"] = Reply(
        200, body, {"Docker-Content-Digest": digest_of(body)}
    )
    fake.routes[f"/v2/owner/img/manifests/{digest_of(body)}"] = Reply(200, body)
    assert os.listdir(mnt / fake.host) == []
    assert (mnt / fake.host / "owner/img/v1/manifest").read_bytes() == body
    assert os.listdir(mnt / fake.host) == ["owner"]
    assert os.listdir(mnt / fake.host / "owner/img") == ["v1"]


def test_tag_lists_are_followed_across_pages(mnt: Mount, fake: FakeRegistry) -> None:
    pages = {
        "": (["a", "b"], '</v2/paged/img/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c", "d"], f'<http://{fake.host}/v2/paged/img/tags/list?n=2&last=d>; rel="next"'),
        "d": (["e"], None),
    }

    def tags_page(path: str) -> Reply:
        last = path.partition("last=")[2]
        tags, link = pages[last]
        body = json.dumps({"name": "paged/img", "tags": tags}).encode()
        return Reply(200, body, {"Link": link} if link else {})

    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["paged/img"]}')
    fake.routes["/v2/paged/img/tags/list"] = tags_page
    assert sorted(os.listdir(mnt / fake.host / "paged/img")) == ["a", "b", "c", "d", "e"]


def test_forged_schema1_is_eio_with_a_log_line(mnt: Mount, fake: FakeRegistry) -> None:
    """Served under the honest digest (by digest and by tag), with another layer."""
    honest = schema1.payload("sha256:" + "1" * 64)
    forged = schema1.tail_carries_payload(honest, schema1.payload("sha256:" + "e" * 64))
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["forged/img"]}')
    fake.routes["/v2/forged/img/tags/list"] = Reply(200, b'{"tags":["1"]}')
    headers = {"Content-Type": SCHEMA1_SIGNED}  # by tag, no digest header: regfs hashes
    fake.routes["/v2/forged/img/manifests/1"] = Reply(200, forged, headers)
    fake.routes[f"/v2/forged/img/manifests/{digest_of(honest)}"] = Reply(200, forged, headers)
    problem = "schema1 manifest: signed part does not end at 'signatures'"
    mnt.allow_log(rf"{fake.host}/forged/img[:@].*: {problem}")
    image = mnt / fake.host / "forged/img"
    expect_errno(errno.EIO, lambda: os.listdir(image / digest_of(honest).replace(":", "-")))
    assert f"{fake.host}/forged/img@{digest_of(honest)}: {problem}" in mnt.log()
    expect_errno(errno.EIO, lambda: os.readlink(image / "1"))
    assert f"{fake.host}/forged/img:1: {problem}" in mnt.log()


def test_names_outside_the_grammar_are_skipped_with_a_log_line(
    mnt: Mount, fake: FakeRegistry
) -> None:
    repositories = [
        "good/one",
        "ok",
        "a//b",
        "/lead",
        "trail/",
        "..",
        "a/../b",
        ".",
        "a/./b",
        "nul\x00name",
        "UPPER/case",
        "new\nline",
        "sp ace",
        "x/" + "b" * 300,
    ]
    tags = ["v1", "ok.tag", "../x", "a/b", "", "t\x00", ".hidden", "-dash", "v2\n",
            "sha256-" + "0" * 64]  # fmt: skip
    fake.routes["/v2/_catalog"] = Reply(200, json.dumps({"repositories": repositories}).encode())
    fake.routes["/v2/ok/tags/list"] = Reply(200, json.dumps({"tags": tags}).encode())
    mnt.allow_log(rf"{fake.host}: /v2/_catalog: skipped 12 invalid names: '",
                  rf"{fake.host}: /v2/ok/tags/list: skipped 7 invalid names: '")  # fmt: skip
    assert sorted(os.listdir(mnt / fake.host)) == ["good", "ok"]
    assert sorted(os.listdir(mnt / fake.host / "ok")) == ["ok.tag", "v1"]
    assert f"{fake.host}: /v2/_catalog: skipped 12 invalid names: 'a//b'" in mnt.log()


def test_http_failures_of_every_kind_are_eio_with_a_log_line(
    mnt: Mount, fake: FakeRegistry
) -> None:
    """A redirect loop, a next-page link that is no URL, one to another origin, and a
    listing whose gzip encoding is garbage: each EIO and one line, never a traceback."""
    fake.routes["/v2/_catalog"] = Reply(
        200, b'{"repositories":["loop/a","link/b","link/c","gz/d"]}'
    )
    fake.routes["/v2/loop/a/tags/list"] = Reply(302, headers={"Location": "/v2/loop/a/tags/list"})
    fake.routes["/v2/link/b/tags/list"] = Reply(
        200, b'{"tags":["1"]}', {"Link": '<http://[::1/v2/x>; rel="next"'}
    )
    fake.routes["/v2/link/c/tags/list"] = Reply(
        200, b'{"tags":["1"]}', {"Link": '<http://elsewhere.test/v2/x>; rel="next"'}
    )
    fake.routes["/v2/gz/d/tags/list"] = Reply(200, b"not gzip", {"Content-Encoding": "gzip"})
    problems = {
        "loop/a": "TooManyRedirects",
        "link/b": "unusable next-page link",
        "link/c": "next page on another origin",
        "gz/d": "DecodingError",
    }
    for repository, problem in problems.items():
        line = rf"{fake.host}.*/v2/{repository}/tags/list\S*: {problem}"
        mnt.allow_log(line)
        expect_errno(errno.EIO, lambda r=repository: os.listdir(mnt / fake.host / r))
        assert re.search(line, mnt.log())


def foreign_image(fake: FakeRegistry, repository: str, layer: bytes, urls: list[str]) -> None:
    """``REPOSITORY:1``: one foreign layer whose blob the registry does not have."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                         "diff_ids": [digest_of(gzip.decompress(layer))]}}).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                    "digest": digest_of(layer), "size": len(layer), "urls": urls}],
    }).encode()  # fmt: skip
    fake.routes[f"/v2/{repository}/tags/list"] = Reply(200, b'{"tags":["1"]}')
    for reference in ("1", digest_of(manifest)):
        fake.routes[f"/v2/{repository}/manifests/{reference}"] = Reply(
            200, manifest, {"Docker-Content-Digest": digest_of(manifest)}
        )
    fake.routes[f"/v2/{repository}/blobs/{digest_of(config)}"] = Reply(200, config)


def tar_gz(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_a_foreign_layer_is_fetched_from_its_urls_and_verified(
    mnt: Mount, fake: FakeRegistry
) -> None:
    layer = tar_gz("hello.txt", b"from a foreign URL\n")
    forged = tar_gz("hello.txt", b"forged\n")
    elsewhere = FakeRegistry(
        {"/layers/good.tgz": Reply(200, layer), "/layers/forged.tgz": Reply(200, forged)}
    )
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["foreign/img","forged/img"]}')
    try:
        urls = ["file:///etc/passwd", f"http://{elsewhere.host}/layers/good.tgz"]
        foreign_image(fake, "foreign/img", layer, urls)
        image = mnt / fake.host / "foreign/img/1"
        assert (image / "rootfs/hello.txt").read_bytes() == b"from a foreign URL\n"
        assert ("GET", "/layers/good.tgz") in elsewhere.requests
        assert any(digest_of(layer) in path for _, path in fake.requests)  # asked first
        named = tar_gz("hello.txt", b"what the manifest names\n")  # served: forged instead
        foreign_image(fake, "forged/img", named, [f"http://{elsewhere.host}/layers/forged.tgz"])
        forged = rf"{fake.host}/forged/img@{digest_of(named)}"
        mnt.allow_log(rf"{forged}: layer blob: \d+ bytes hashing to")
        expect_errno(errno.EIO, lambda: os.listdir(mnt / fake.host / "forged/img/1/0"))
    finally:
        elsewhere.stop()


def test_a_registry_cannot_send_regfs_to_the_metadata_service(
    mnt: Mount, fake: FakeRegistry
) -> None:
    """A layer's blob redirected to 169.254.169.254, or a foreign layer whose URL is there:
    EACCES and one line naming the target and why, and nothing sent there. A redirect to
    ``localhost`` (resolved, and the connection pinned to the checked address) is
    followed: the registry is on loopback too."""
    layer = tar_gz("hello.txt", b"from localhost\n")
    elsewhere = FakeRegistry({"/layers/good.tgz": Reply(200, layer)})
    metadata = "http://169.254.169.254/latest/meta-data/"
    blob = f"/v2/inward/redirect/blobs/{digest_of(layer)}"
    try:
        foreign_image(fake, "inward/urls", layer, [metadata])
        foreign_image(fake, "inward/redirect", layer, [])
        fake.routes[blob] = Reply(307, headers={"Location": metadata})
        line = (
            r"refused to send to 169\.254\.169\.254: 169\.254\.169\.254 is a link-local "
            rf"address, and {re.escape(fake.host)} is on a loopback address \(allow with "
            r"--allow-redirect-to 169\.254\.169\.254\)"
        )
        mnt.allow_log(line)
        for repository in ("inward/urls", "inward/redirect"):
            layer_dir = mnt / fake.host / repository / "1/0"
            expect_errno(errno.EACCES, lambda d=layer_dir: os.listdir(d))
        assert len(re.findall(line, mnt.log())) == 2
        location = f"http://localhost:{elsewhere.port}/layers/good.tgz"
        fake.routes[blob] = Reply(307, headers={"Location": location})
        image = mnt / fake.host / "inward/redirect/1"
        assert (image / "rootfs/hello.txt").read_bytes() == b"from localhost\n"
        assert ("GET", "/layers/good.tgz") in elsewhere.requests
    finally:
        elsewhere.stop()


def test_schema1_signatures_are_checked_when_asked(
    tmp_path: Path, pushed: Pushed, fake: FakeRegistry
) -> None:
    """registry:2's own signatures verify; a correctly hashed manifest whose signature
    is not its key's is EIO."""
    key = ec.generate_private_key(ec.SECP256R1())
    signed = schema1.payload("sha256:" + "1" * 64, indent=3)
    badly_signed = schema1.sign(signed, key, tamper=True)
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["signed/img"]}')
    fake.routes[f"/v2/signed/img/manifests/{digest_of(signed)}"] = Reply(200, badly_signed)
    mount = Mount(tmp_path / "mnt", "--verify-schema1-signatures")
    mount.allow_log(rf"{fake.host}/signed/img@{digest_of(signed)}: schema1 signature \(ES256\)")
    try:
        image = mount / pushed.registry.host / "formats/schema1/latest"
        assert json.loads((image / "config").read_bytes())["architecture"] == "amd64"
        bad = mount / fake.host / "signed/img" / digest_of(signed).replace(":", "-")
        expect_errno(errno.EIO, lambda: os.listdir(bad))
        assert "schema1 signature (ES256) does not verify" in mount.log()
    finally:
        mount.close()


def test_an_image_of_thousands_of_missing_layers_fails_fast(mnt: Mount, fake: FakeRegistry) -> None:
    """2 000 layers whose blobs the registry lacks: ``ls rootfs`` fails at the first missing
    layer, after a handful of requests, not 2 000 of them at once. It is EIO, not ENOENT:
    glibc's readdir takes ENOENT for the end of a listing, and `ls` would show nothing."""
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
               "digest": "sha256:" + hashlib.sha256(str(n).encode()).hexdigest(), "size": 10}
              for n in range(2000)]  # fmt: skip
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers,
                           "config": json.loads(oci_manifest())["config"]}).encode()  # fmt: skip
    fake.routes["/v2/_catalog"] = Reply(200, b'{"repositories":["many/layers"]}')
    fake.routes[f"/v2/many/layers/manifests/{digest_of(manifest)}"] = Reply(200, manifest)
    for layer in layers:  # a registry 50 ms away that lacks every blob
        missing = Reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', delay=0.05)
        fake.routes[f"/v2/many/layers/blobs/{layer['digest']}"] = missing
    rootfs = mnt / fake.host / "many/layers" / digest_of(manifest).replace(":", "-") / "rootfs"
    mnt.allow_log(r"WARNING regfs.fuse: readdir: cannot be listed: .*many/layers")
    took = expect_errno(errno.EIO, lambda: os.listdir(rootfs))
    blob_requests = [path for _, path in fake.requests if "/blobs/" in path]
    assert took < TIMEOUT and len(blob_requests) <= 8, (took, len(blob_requests))


def layer_manifest(layers: object, config: bytes = CONFIG) -> bytes:
    document = json.loads(oci_manifest(config))
    document["layers"] = layers
    return json.dumps(document).encode()


LAYER_BLOB = gzip.compress(b"\0" * 1024)
GOOD_LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
              "digest": digest_of(LAYER_BLOB), "size": len(LAYER_BLOB)}  # fmt: skip
HOSTILE_MANIFESTS = {
    "twenty-megabytes": (
        layer_manifest([{**GOOD_LAYER, "annotations": {"x": "y" * (20 << 20)}}]),
        "image",
        r"more than 4194304",
    ),
    "negative-size": (layer_manifest([{**GOOD_LAYER, "size": -1}]), "image", "negative size"),
    "size-as-text": (layer_manifest([{**GOOD_LAYER, "size": "12"}]), "image", "size"),
    "layers-as-text": (layer_manifest("sha256:abc"), "image", "layers"),
    "huge-size": (layer_manifest([{**GOOD_LAYER, "size": 1 << 62}]), "layer", "hashing to|bytes"),
    "wrong-layer-digest": (
        layer_manifest([{**GOOD_LAYER, "digest": digest_of(b"other")}]),
        "layer",
        "hashing to",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_hostile_manifests_are_eio_with_a_log_line(
    mnt: Mount, fake: FakeRegistry, case: str
) -> None:
    """A registry serving manifests of tens of MB, wrong types, impossible sizes, or layers
    that are not what they say: EIO within the timeout, one log line, nothing served."""
    body, failing, message = HOSTILE_MANIFESTS[case]
    repository = f"hostile/{case}"
    image = mnt / fake.host / repository / digest_of(body).replace(":", "-")
    mnt.allow_log(rf"{repository}[/@].*({message})")
    fake.routes[f"/v2/{repository}/manifests/{digest_of(body)}"] = Reply(200, body)
    fake.routes[f"/v2/{repository}/blobs/{digest_of(CONFIG)}"] = Reply(200, CONFIG)
    for digest in (GOOD_LAYER["digest"], digest_of(b"other")):
        fake.routes[f"/v2/{repository}/blobs/{digest}"] = Reply(200, LAYER_BLOB)
    path = image if failing == "image" else image / "0"
    took = expect_errno(errno.EIO, lambda: os.listdir(path), mnt)
    assert took < TIMEOUT + 2, took
    assert re.search(message, mnt.log())
