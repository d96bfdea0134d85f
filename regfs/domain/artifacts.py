"""OCI artifacts: manifests that are not images (a SOCI index, a start record), what they
share in how they are written and found among an image's referrers.

Domain layer: pure, stdlib only.
"""

from __future__ import annotations

import json
from typing import Any

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor, ImageIndex

EMPTY_CONFIG = b"{}"
"""The config blob of an artifact that has none (OCI image-spec 1.1's empty descriptor's)."""
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
"""The empty descriptor's media type (a SOCI index names its own instead)."""


def artifacts_among(referrers: ImageIndex, artifact_type: str) -> list[Descriptor]:
    """The image manifests of ``artifact_type`` in a referrers list, in its order."""
    return [
        descriptor
        for descriptor in referrers.manifests
        if descriptor.artifact_type == artifact_type
        and mediatypes.is_image_manifest(descriptor.media_type)
    ]


def blob_fields(digest: Digest, size: int | None) -> dict[str, Any]:
    """A descriptor's ``digest`` and ``size``, as a manifest written here holds them."""
    return {"digest": str(digest), "size": size}


def subject_field(subject: Descriptor) -> dict[str, Any]:
    """An artifact's ``subject``: the manifest it refers to."""
    return {"mediaType": subject.media_type, **blob_fields(subject.digest, subject.size)}


def empty_config(media_type: str) -> dict[str, Any]:
    """The descriptor of ``EMPTY_CONFIG`` as an artifact's config of ``media_type``."""
    return {"mediaType": media_type, **blob_fields(Digest.of(EMPTY_CONFIG), len(EMPTY_CONFIG))}


def compact_json(document: dict[str, Any]) -> bytes:
    """A manifest's bytes as regfs writes them (its digest is of these bytes)."""
    return json.dumps(document, separators=(",", ":")).encode()


def referrers_tag(digest: Digest) -> str:
    """The tag that lists ``digest``'s referrers where the registry has no referrers API."""
    return f"{digest.algorithm[:32]}-{digest.hex[:64]}"


def with_referrer(existing: ImageIndex | None, raw_existing: bytes | None, referrer: Descriptor,
                  annotations: dict[str, str]) -> bytes:  # fmt: skip
    """The referrers index of the fallback tag with ``referrer`` added (once)."""
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                                "manifests": []}  # fmt: skip
    if existing is not None and raw_existing is not None:
        document = json.loads(raw_existing)
        if any(d.digest == referrer.digest for d in existing.manifests):
            return compact_json(document)
    document["manifests"].append({
        "mediaType": referrer.media_type, **blob_fields(referrer.digest, referrer.size),
        "artifactType": referrer.artifact_type, "annotations": annotations,
    })  # fmt: skip
    return compact_json(document)
