"""Which entry of an index is the image for a platform (``ImageIndex.image_for``): the one
choice the mount's index dirs, ``regfs prefetch``, ``cache --image`` and ``index push``
make. Entries that are not images to run (artifacts such as a SOCI v2 index, BuildKit's
attestations, nested indexes) are never chosen, whatever platform they carry."""

from __future__ import annotations

import json

import pytest

from regfs.domain import mediatypes
from regfs.domain.manifest import ImageIndex, parse_manifest
from regfs.domain.platform import Platform
from regfs.domain.soci import SOCI_INDEX_V2

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
UNKNOWN = {"os": "unknown", "architecture": "unknown"}


def entry(
    name: str, platform: dict[str, str] | None = AMD64, **fields: object
) -> dict[str, object]:
    """An index entry whose digest is made of ``name``'s first character (a hex digit)."""
    document: dict[str, object] = {
        "mediaType": mediatypes.OCI_MANIFEST, "digest": f"sha256:{name[0] * 64}", "size": 10,
    }  # fmt: skip
    if platform is not None:
        document["platform"] = platform
    return document | fields


def index_of(*entries: dict[str, object]) -> ImageIndex:
    raw = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                      "manifests": list(entries)}).encode()  # fmt: skip
    parsed = parse_manifest(raw)
    assert isinstance(parsed, ImageIndex)
    return parsed


IMAGE = "sha256:" + "a" * 64
SOCI = entry("0-soci", artifactType=SOCI_INDEX_V2,
             annotations={"com.amazon.soci.image-manifest-digest": IMAGE})  # fmt: skip
ATTESTATION = entry("e-attestation", UNKNOWN, annotations={
    "vnd.docker.reference.type": "attestation-manifest",
    "vnd.docker.reference.digest": IMAGE,
})  # fmt: skip


@pytest.mark.parametrize(("entries", "wanted", "chosen"), [
    ([entry("amd64"), entry("b-arm64", ARM64)], AMD64, "amd64"),
    ([entry("amd64"), entry("b-arm64", ARM64)], ARM64, "b-arm64"),
    ([SOCI, entry("amd64")], AMD64, "amd64"),  # soci convert lists its index beside the image
    ([entry("amd64"), SOCI], AMD64, "amd64"),
    ([SOCI], AMD64, None),
    ([entry("amd64", artifactType=mediatypes.OCI_CONFIG)], AMD64, "amd64"),  # says: an image
    ([entry("docker", mediaType=mediatypes.DOCKER_MANIFEST)], AMD64, "docker"),
    ([entry("f-sbom", artifactType="application/spdx+json"), entry("amd64")], AMD64, "amd64"),
    ([entry("amd64"), ATTESTATION], UNKNOWN, None),  # BuildKit's: about the image, not one
    ([entry("1-index", mediaType=mediatypes.OCI_INDEX)], AMD64, None),  # nested: not followed
    ([entry("c-schema1", mediaType=mediatypes.DOCKER_SCHEMA1_SIGNED)], AMD64, None),
    ([entry("2-unplatformed", platform=None)], AMD64, None),
])  # fmt: skip
def test_the_image_for_a_platform(
    entries: list[dict[str, object]], wanted: dict[str, str], chosen: str | None
) -> None:
    found = index_of(*entries).image_for(Platform(**wanted))
    assert (found.digest.hex[0] if found else None) == (chosen[0] if chosen else None)


def test_images_are_listed_in_the_index_order_without_the_others() -> None:
    index = index_of(SOCI, entry("amd64"), ATTESTATION, entry("b-arm64", ARM64))
    images = [(str(platform), entry.digest.hex[0]) for platform, entry in index.images()]
    assert images == [("linux/amd64", "a"), ("linux/arm64/v8", "b")]
