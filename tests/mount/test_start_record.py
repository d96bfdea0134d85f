"""Start records: ``regfs index push-start`` pushes what a start reads as a referrer of the
image, and a mount fetches those files together when the image is first read, from the
layer that provides each, and nothing else; a record that does not parse costs one log
line and nothing of what is served. Images are zstd:chunked, pushed by skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regfs.domain.start_record import START_RECORD
from tests.support import images
from tests.support.crafted import descriptor, upload_blob
from tests.support.mount import Mount, run_regfs, written
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.mount

MODULES = {f"usr/lib/app/mod{n}.py": os.urandom(150_000) for n in range(6)}
LOWER = {**MODULES, "usr/share/big.bin": os.urandom(3 << 20), "etc/os-release": b"ID=test\n"}
UPPER = {"usr/lib/app/mod0.py": os.urandom(120_000)}
"""The top layer replaces one module: the merged tree shows this one."""
RECORD = (
    "# what the start read, as strace showed it\n"
    "/usr/lib/app/mod0.py\n"
    '{"path": "usr/lib/app/mod3.py", "manifestDigest": "sha256:00", "layerIndex": 0}\n'
    "./usr/lib/app/mod5.py\n"
    "/usr/lib/app/not-in-the-image.py\n"
)
RECORDED = ("usr/lib/app/mod0.py", "usr/lib/app/mod3.py", "usr/lib/app/mod5.py")


@dataclass(frozen=True)
class Layers:
    registry: Registry
    proxy: CountingProxy
    digests: tuple[str, str]
    """The lower and the upper layer's blob digests."""

    def rootfs(self, mount: Mount, repository: str) -> Path:
        return mount / self.proxy.host / repository / "1" / "rootfs"


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layers]:
    """A two-layer image, zstd:chunked, at ``app/recorded:1``, ``app/hostile:1`` and
    ``app/plain:1``."""
    work = tmp_path_factory.mktemp("start-record")
    layout = work / "oci"
    images.build_image(layout, "1", LOWER)
    bundle = work / "bundle"
    images.run("umoci", "unpack", "--image", f"{layout}:1", bundle)
    for name, data in UPPER.items():
        (bundle / "rootfs" / name).write_bytes(data)
    images.run("umoci", "repack", "--image", f"{layout}:1", bundle)
    shutil.rmtree(bundle)
    registry = Registry(work / "registry")
    for repository in ("recorded", "hostile", "plain"):
        images.push(layout, "1", f"{registry.host}/app/{repository}:1",
                    "--dest-compress-format", "zstd:chunked")  # fmt: skip
    body, _, _ = images.get_manifest(registry.url, "app/recorded", "1")
    lower, upper = (layer["digest"] for layer in json.loads(body)["layers"])
    proxy = CountingProxy(registry.port)
    yield Layers(registry, proxy, (lower, upper))
    proxy.stop()
    registry.stop()


@pytest.fixture
def mount(tmp_path: Path, layers: Layers) -> Iterator[Mount]:
    layers.proxy.reset()
    mounted = Mount(tmp_path / "mnt")
    yield mounted
    mounted.close()


@pytest.fixture(scope="module")
def recorded(layers: Layers, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``app/recorded:1`` given a start record by the installed CLI; what it printed."""
    record = tmp_path_factory.mktemp("record") / "start.txt"
    record.write_text(RECORD)
    pushed = run_regfs("index", "push-start", f"{layers.registry.host}/app/recorded:1", str(record))
    assert pushed.returncode == 0, pushed.stderr
    return pushed.stdout


def test_the_files_a_record_names_are_fetched_at_the_first_read_from_their_layer(
    layers: Layers, recorded: str, mount: Mount
) -> None:
    assert "(4 files)" in recorded
    _, _, image = images.get_manifest(layers.registry.url, "app/recorded", "1")
    listed, _, _ = images.get_manifest(
        layers.registry.url, "app/recorded", image.replace(":", "-")
    )  # the fallback tag of OCI distribution-spec 1.1: registry:2 has no referrers API
    assert [m["artifactType"] for m in json.loads(listed)["manifests"]] == [START_RECORD]

    rootfs = layers.rootfs(mount, "app/recorded")
    # a listing, not a read: a small file's read may bring its neighbours in the blob
    assert sorted(os.listdir(rootfs / "usr/lib/app")) == sorted(
        os.path.basename(m) for m in MODULES
    )
    lower, upper = layers.digests
    written(mount, "as its start record names: /usr/lib/app/mod3.py, /usr/lib/app/mod5.py")
    written(mount, "as its start record names: /usr/lib/app/mod0.py")
    # the modules named and the TOCs; neither big.bin nor the hidden mod0.py
    assert layers.proxy.blob_bytes(upper) < 200_000, layers.proxy.blob_ranges
    assert layers.proxy.blob_bytes(lower) < 2 * 150_000 + 100_000, layers.proxy.blob_ranges
    layers.proxy.reset()
    expected = {**LOWER, **UPPER}
    for name in RECORDED:
        assert (rootfs / name).read_bytes() == expected[name], name
    assert layers.proxy.range_requests == 0
    assert (rootfs / "usr/lib/app/mod1.py").read_bytes() == MODULES["usr/lib/app/mod1.py"]
    assert layers.proxy.range_requests > 0  # not named: fetched when read


def test_a_layer_dir_s_first_read_fetches_them_too(
    layers: Layers, recorded: str, mount: Mount
) -> None:
    """overlayfs over the layer dirs (``lowerdir=1:0``) reads through them, not rootfs/."""
    top = layers.rootfs(mount, "app/recorded").parent / "1"
    assert (top / "usr/lib/app/mod0.py").read_bytes() == UPPER["usr/lib/app/mod0.py"]
    written(mount, "as its start record names: /usr/lib/app/mod3.py, /usr/lib/app/mod5.py")
    layers.proxy.reset()
    lower = top.parent / "0"
    assert (lower / "usr/lib/app/mod5.py").read_bytes() == MODULES["usr/lib/app/mod5.py"]
    assert layers.proxy.range_requests == 0


def test_an_image_without_a_record_is_read_as_before(layers: Layers, mount: Mount) -> None:
    rootfs = layers.rootfs(mount, "app/plain")
    assert (rootfs / "usr/lib/app/mod3.py").read_bytes() == MODULES["usr/lib/app/mod3.py"]
    assert "start record" not in mount.log()
    assert layers.proxy.blob_bytes(layers.digests[0]) < 150_000 + 200_000


@pytest.mark.parametrize(
    "document",
    [b"not json", b'{"files": "usr/lib/app/mod1.py"}', json.dumps({"other": []}).encode()],
)
def test_a_record_that_does_not_parse_costs_one_line_and_nothing_served(
    layers: Layers, mount: Mount, document: bytes
) -> None:
    """Pushed with the test's own requests (the fallback tag's index written here too), so
    a mistake regfs's push and its mount share cannot hide."""
    registry, repository = layers.registry.url, "app/hostile"
    body, content_type, image = images.get_manifest(registry, repository, "1")
    config, record = (
        upload_blob(registry, repository, b"{}"),
        upload_blob(registry, repository, document),
    )
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": START_RECORD,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **config},
        "layers": [{"mediaType": START_RECORD, **record}],
        "subject": descriptor(content_type, body),
    }).encode()  # fmt: skip
    listing = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{**descriptor("application/vnd.oci.image.manifest.v1+json", manifest),
                       "artifactType": START_RECORD}],
    }).encode()  # fmt: skip
    for reference, data, media_type in (
        (
            f"sha256:{hashlib.sha256(manifest).hexdigest()}",
            manifest,
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (image.replace(":", "-"), listing, "application/vnd.oci.image.index.v1+json"),
    ):
        images.registry_request(f"{registry}/v2/{repository}/manifests/{reference}", "PUT",
                                data, {"Content-Type": media_type})  # fmt: skip
    mount.allow_log(r"WARNING .*: start record not used \(.*")
    rootfs = layers.rootfs(mount, repository)
    assert (rootfs / "usr/lib/app/mod1.py").read_bytes() == MODULES["usr/lib/app/mod1.py"]
    written(mount, "start record not used")
    assert mount.log().count("start record not used") == 1
    assert (rootfs / "usr/lib/app/mod0.py").read_bytes() == UPPER["usr/lib/app/mod0.py"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("# nothing\n\n", "it names no file"), ('{"path": 7}\n', 'line 1: no "path"')],
)
def test_a_record_file_that_names_nothing_is_refused_before_any_push(
    tmp_path: Path, layers: Layers, text: str, message: str
) -> None:
    record = tmp_path / "record"
    record.write_text(text)
    pushed = run_regfs("index", "push-start", f"{layers.registry.host}/app/plain:1", str(record))
    assert pushed.returncode == 1
    assert message in pushed.stderr
    missing = run_regfs("index", "push-start", f"{layers.registry.host}/app/plain:1",
                        str(tmp_path / "absent"))  # fmt: skip
    assert missing.returncode == 1
    assert "absent" in missing.stderr


def test_a_mount_records_what_is_read_and_that_record_is_used(
    tmp_path: Path, layers: Layers
) -> None:
    """``--record-reads``: each file read through ``rootfs/`` or a layer dir once, in the
    order first read, the form ``regfs index push-start`` takes; pushed, a fresh mount
    fetches those files when the image is first read."""
    record = tmp_path / "reads.txt"
    recording = Mount(tmp_path / "recording", "--record-reads", str(record))
    try:
        rootfs = layers.rootfs(recording, "app/plain")
        for name in ("usr/lib/app/mod4.py", "usr/lib/app/mod0.py", "usr/lib/app/mod4.py"):
            assert (rootfs / name).read_bytes() == {**LOWER, **UPPER}[name]
        lower = rootfs.parent / "0"
        assert (lower / "usr/lib/app/mod2.py").read_bytes() == MODULES["usr/lib/app/mod2.py"]
        os.listdir(rootfs / "usr/share")  # a listing reads no file
        assert record.read_text() == (
            "/usr/lib/app/mod4.py\n/usr/lib/app/mod0.py\n/usr/lib/app/mod2.py\n"
        )
    finally:
        recording.close()
    pushed = run_regfs("index", "push-start", f"{layers.registry.host}/app/plain:1", str(record))
    assert pushed.returncode == 0, pushed.stderr
    layers.proxy.reset()
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = layers.rootfs(mount, "app/plain")
        os.listdir(rootfs / "usr")
        written(mount, "as its start record names: /usr/lib/app/mod4.py, /usr/lib/app/mod2.py")
        written(mount, "as its start record names: /usr/lib/app/mod0.py")
        layers.proxy.reset()
        assert (rootfs / "usr/lib/app/mod4.py").read_bytes() == MODULES["usr/lib/app/mod4.py"]
        assert layers.proxy.range_requests == 0
    finally:
        mount.close()
    (tmp_path / "never").mkdir()  # refused before it is mounted
    missing = run_regfs(
        "mount", "--record-reads", str(tmp_path / "no/such/dir/reads.txt"),
        "--cache-dir", str(tmp_path / "cache"), str(tmp_path / "never"),
    )  # fmt: skip
    assert missing.returncode == 1
    assert "No such file or directory" in missing.stderr
