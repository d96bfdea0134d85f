"""SOCI indexes (awslabs/soci-snapshotter): which zTOC describes which layer of an image.

Domain layer: pure, stdlib only. A SOCI index is an OCI image manifest whose config media
type names it (v1 or v2) and whose "layers" are zTOC blobs, each annotated with the
digest of the image layer it describes. It is found for an image manifest in one of two
ways: SOCI v2 names it in the image manifest's own annotation (covered by the manifest's
digest), SOCI v1 points back at the image as a referrer (``subject``), listed by the
referrers API or, where a registry lacks it, in an image index tagged
``<algorithm>-<hex>`` of the image's digest (OCI distribution-spec 1.1).
"""

from __future__ import annotations

from regfs.domain import mediatypes
from regfs.domain.artifacts import (
    artifacts_among,
    blob_fields,
    compact_json,
    empty_config,
    subject_field,
)
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor, ImageIndex, ImageManifest

SOCI_INDEX_V1 = "application/vnd.amazon.soci.index.v1+json"
SOCI_INDEX_V2 = "application/vnd.amazon.soci.index.v2+json"
INDEX_DIGEST_ANNOTATION = "com.amazon.soci.index-digest"
"""On a SOCI v2 image manifest: the digest of its SOCI index."""
LAYER_DIGEST_ANNOTATION = "com.amazon.soci.image-layer-digest"
LAYER_MEDIA_TYPE_ANNOTATION = "com.amazon.soci.image-layer-mediaType"
SPAN_SIZE_ANNOTATION = "com.amazon.soci.span-size"
BUILD_TOOL_ANNOTATION = "com.amazon.soci.build-tool-identifier"
ZTOC_MEDIA_TYPE = "application/octet-stream"


def soci_indexes_among(referrers: ImageIndex) -> list[Digest]:
    """The SOCI v1 indexes in a referrers list, in its order."""
    return [descriptor.digest for descriptor in artifacts_among(referrers, SOCI_INDEX_V1)]


def ztocs_by_layer(index: ImageManifest, what: str) -> dict[Digest, Descriptor]:
    """The zTOC descriptor of each layer a SOCI index covers, by layer digest."""
    if index.config is None or index.config.media_type not in {SOCI_INDEX_V1, SOCI_INDEX_V2}:
        kind = index.config.media_type if index.config else "none"
        raise MalformedContent(f"{what}: not a SOCI index (config media type {kind!r})")
    found: dict[Digest, Descriptor] = {}
    for blob in index.layers:
        layer = blob.annotation(LAYER_DIGEST_ANNOTATION)
        if blob.media_type != ZTOC_MEDIA_TYPE or layer is None:
            continue  # a prefetch list, or something newer
        found.setdefault(Digest.parse(layer), blob)
    return found


def soci_index_manifest(
    ztocs: list[tuple[Descriptor, Descriptor]],
    subject: Descriptor,
    span_size: int,
    build_tool: str,
) -> bytes:
    """A SOCI v1 index of (zTOC, image layer) pairs that points back at ``subject``."""
    return compact_json({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": empty_config(SOCI_INDEX_V1),
        "layers": [
            {"mediaType": ZTOC_MEDIA_TYPE, **blob_fields(ztoc.digest, ztoc.size),
             "annotations": {
                 LAYER_DIGEST_ANNOTATION: str(layer.digest),
                 LAYER_MEDIA_TYPE_ANNOTATION: layer.media_type,
                 SPAN_SIZE_ANNOTATION: str(span_size),
             }}
            for ztoc, layer in ztocs
        ],
        "subject": subject_field(subject),
        "annotations": {BUILD_TOOL_ANNOTATION: build_tool},
    })  # fmt: skip
