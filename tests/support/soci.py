"""SOCI v2 images from what ``regfs index push`` made, as ``soci convert`` would name them.

``regfs index push`` makes a v1 index: a referrer of the image, which no digest the user
names covers (mounts use it only with ``--soci-v1-referrers``). A v2 index is the same
zTOCs in an index with no subject, named by an annotation of the image manifest itself: a
new manifest, under a tag of its own, that every mount (and a layer store) uses.
"""

from __future__ import annotations

import json
from typing import Any

from regfs.domain.artifacts import referrers_tag
from regfs.domain.digest import Digest
from regfs.domain.soci import INDEX_DIGEST_ANNOTATION, SOCI_INDEX_V2
from tests.support import images

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"
"""The config blob of a SOCI index (``regfs index push`` uploads it with the v1 index)."""


def put_manifest(url: str, repository: str, reference: str, body: bytes, media_type: str) -> None:
    images.registry_request(f"{url}/v2/{repository}/manifests/{reference}", method="PUT",
                            data=body, headers={"Content-Type": media_type})  # fmt: skip


def v1_index(url: str, repository: str, image: bytes) -> tuple[str, dict[str, Any]]:
    """The digest and document of the SOCI v1 index listed under the image's referrers tag."""
    body, _, _ = images.get_manifest(url, repository, referrers_tag(Digest.of(image)))
    (referrer,) = json.loads(body)["manifests"]
    index, _, _ = images.get_manifest(url, repository, referrer["digest"])
    return referrer["digest"], json.loads(index)


def annotated(
    url: str, repository: str, image: bytes, annotations: dict[str, str], tag: str
) -> bytes:
    """The image's manifest with ``annotations`` (another digest), pushed as ``tag``."""
    document = json.loads(image)
    document["annotations"] = {**document.get("annotations", {}), **annotations}
    body = json.dumps(document).encode()
    put_manifest(url, repository, tag, body, OCI_MANIFEST)
    return body


def push_v2(url: str, repository: str, image: bytes, tag: str) -> tuple[bytes, bytes]:
    """The v1 index of ``image`` made a v2 index, and the image annotated with it pushed
    as ``tag``: (the v2 index, the annotated image manifest)."""
    _, document = v1_index(url, repository, image)
    config = Digest.of(EMPTY_CONFIG)
    document["config"] = {"mediaType": SOCI_INDEX_V2, "digest": str(config),
                          "size": len(EMPTY_CONFIG)}  # fmt: skip
    del document["subject"]
    index = json.dumps(document).encode()
    put_manifest(url, repository, str(Digest.of(index)), index, OCI_MANIFEST)
    pushed = annotated(
        url, repository, image, {INDEX_DIGEST_ANNOTATION: str(Digest.of(index))}, tag
    )
    return index, pushed
