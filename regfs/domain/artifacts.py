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


def empty_config(media_type: str) -> dict[str, Any]:
    """The descriptor of ``EMPTY_CONFIG`` as an artifact's config of ``media_type``."""
    return {"mediaType": media_type, **blob_fields(Digest.of(EMPTY_CONFIG), len(EMPTY_CONFIG))}


def compact_json(document: dict[str, Any]) -> bytes:
    """A manifest's bytes as regfs writes them (its digest is of these bytes)."""
    return json.dumps(document, separators=(",", ":")).encode()
