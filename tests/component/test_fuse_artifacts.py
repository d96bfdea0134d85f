"""Images and artifacts of the shapes registries hold beside plain images, through
``Operations``: OCI 1.1 artifacts (an empty or non-JSON config, blobs that are no tar:
signatures, attestations, wasm, models), images of no layer, and indexes whose platform
entries would make no file name. In-memory registry, autojump clock."""

from __future__ import annotations

import base64
import errno
import json
import logging

import pytest
import trio

from tests.support.crafted import GZIP_LAYER, OCI_MANIFEST, descriptor, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel, errno_of
from tests.support.memory_registry import OCI_INDEX, MemoryRegistry, Repository, sha256

EMPTY_CONFIG = ("application/vnd.oci.empty.v1+json", b"{}")
SIGNATURE = (
    "application/vnd.dev.cosign.simplesigning.v1+json",
    b'{"critical": {"identity": {"docker-reference": "reg/app"}, "type": "cosign"}}',
)
WASM = ("application/wasm", b"\x00asm\x01\x00\x00\x00" + bytes(600))
LAYER = gzip_layer(member("etc/motd", b"hi\n"))
IMAGE_CONFIG = (
    "application/vnd.oci.image.config.v1+json",
    b'{"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": []}}',
)


def push(
    registry: MemoryRegistry,
    tag: str,
    config: tuple[str, bytes],
    layers: list[tuple[str, bytes]],
    **fields: object,
) -> str:
    """An OCI manifest of ``config`` and ``layers`` ((media type, bytes) each) as
    ``art:tag``, with any other top-level ``fields``; the path of its digest dir."""
    stored = registry.repositories.setdefault("art", Repository())
    for _, blob in (config, *layers):
        stored.blobs[sha256(blob)] = blob
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, **fields,
        "config": descriptor(*config), "layers": [descriptor(*layer) for layer in layers],
    }  # fmt: skip
    digest = registry.put_manifest("art", tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"{HOST}/art/{digest.replace(':', '-')}"


async def test_an_image_of_no_layer_has_an_empty_rootfs(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    image = push(registry, "scratch", IMAGE_CONFIG, [])
    assert await kernel.listdir(image) == [b"manifest", b"config", b"rootfs"]
    assert await kernel.listdir(f"{image}/rootfs") == []
    root = await kernel.lookup(f"{image}/rootfs")
    assert (root.st_mode & 0o7777, root.st_uid, root.attr_timeout > 0) == (0o755, 0, True)
    assert (await kernel.lookup(f"{image}/rootfs/etc")).st_ino == 0  # a negative entry


@pytest.mark.parametrize("blob", [SIGNATURE, WASM, (f"{GZIP_LAYER}+encrypted", LAYER)])
async def test_a_layer_that_is_no_tar_is_eio_said_once_and_never_fetched(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
    blob: tuple[str, bytes],
) -> None:
    artifact = push(registry, "sig", EMPTY_CONFIG, [blob], artifactType=blob[0])
    assert b"0" in await kernel.listdir(artifact)
    for path in (f"{artifact}/0", f"{artifact}/rootfs", f"{artifact}/0"):
        assert await errno_of(lambda: kernel.listdir(path)) == errno.EIO  # noqa: B023
    assert await errno_of(lambda: kernel.lookup(f"{artifact}/rootfs/etc")) == errno.EIO
    assert registry.blob_gets(sha256(blob[1])) == 0
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and f"{blob[0]} is not a tar" in said[0], said
    access = await kernel.getxattr(f"{artifact}/0", "user.regfs.access")
    assert f"{blob[0]} is not a tar" in access.decode()


async def test_a_chart_is_a_tar_and_its_files_are_shown(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    chart = ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", LAYER)
    config = ("application/vnd.cncf.helm.config.v1+json", b'{"name": "app"}')
    artifact = push(registry, "chart", config, [chart])
    assert await kernel.read(f"{artifact}/0/etc/motd") == b"hi\n"


@pytest.mark.parametrize("config", [
    ("application/octet-stream", b"\x00\x01 not JSON"),
    ("application/vnd.example.config+json", b'["not", "an", "object"]'),
    ("application/vnd.example.config+json", b'{"os": "linux", "architecture": "arm64"}'),
])  # fmt: skip
async def test_an_artifact_s_config_is_shown_as_is_and_names_no_platform(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    kernel: Kernel,
    config: tuple[str, bytes],
) -> None:
    artifact = push(registry, "sbom", config, [], artifactType="application/spdx+json")
    assert await kernel.read(f"{artifact}/config") == config[1]
    names = ["user.regfs.digest", "user.regfs.media_type", "user.regfs.fetched"]
    assert await kernel.listxattr(artifact) == names
    no_attribute = kernel.getxattr(artifact, "user.regfs.platform")
    assert await errno_of(lambda: no_attribute) == errno.ENODATA


async def test_index_entries_whose_platform_makes_no_file_name_are_left_out(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kernel fails a whole listing for one name with a ``/`` or none at all."""
    image = push(registry, "amd64", IMAGE_CONFIG, [])
    digest = image.rsplit("/", 1)[1].replace("-", ":", 1)
    raw = registry.repositories["art"].manifests[digest][0]
    platforms = [{"os": "linux", "architecture": "amd64"}, {"os": "linux/x", "architecture": "y"},
                 {"os": "", "architecture": ""}, {"os": "..", "architecture": ""},
                 {"os": ".", "architecture": ""}, {"os": "a\x00", "architecture": "b"}]  # fmt: skip
    entries = [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw), "platform": p}
               for p in platforms]  # fmt: skip
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    pushed = registry.put_manifest("art", "multi", json.dumps(index).encode(), OCI_INDEX)
    names = await kernel.listdir(f"{HOST}/art/{pushed.replace(':', '-')}")
    assert names == [b"manifest", b"linux-amd64", b"config", b"rootfs"]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 5 and all("no file name" in line for line in said), said


@pytest.mark.parametrize("embedded", [EMPTY_CONFIG[1], b"{ }"])
async def test_a_config_the_manifest_embeds_is_read_from_it_only_if_it_matches(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, embedded: bytes
) -> None:
    """OCI 1.1 ``data``: an artifact's empty config often comes in the manifest, so no
    request is needed; data that is not the content the digest names is never shown."""
    stored = registry.repositories.setdefault("art", Repository())
    stored.blobs[sha256(EMPTY_CONFIG[1])] = EMPTY_CONFIG[1]
    config = {**descriptor(*EMPTY_CONFIG), "data": base64.b64encode(embedded).decode()}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
    digest = registry.put_manifest("art", "embedded", json.dumps(manifest).encode(), OCI_MANIFEST)
    image = f"{HOST}/art/{digest.replace(':', '-')}"
    assert await kernel.read(f"{image}/config") == EMPTY_CONFIG[1]
    fetched = registry.blob_gets(sha256(EMPTY_CONFIG[1]))
    assert fetched == (0 if embedded == EMPTY_CONFIG[1] else 1)
