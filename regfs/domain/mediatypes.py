"""Manifest and layer media types, and the questions the rest of regfs asks about them.

Domain layer: pure, stdlib only.
"""

from __future__ import annotations

import re

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1 = frozenset({DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1})
IMAGE_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Most preferred first. Registries that convert for poor clients (Pulp, old distribution)
# only keep the original when every type is offered.
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
        DOCKER_SCHEMA1_SIGNED,
        DOCKER_SCHEMA1,
    ]
)


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_image_manifest(media_type: str) -> bool:
    return media_type in IMAGE_MANIFESTS


def is_schema1(media_type: str) -> bool:
    return media_type in SCHEMA1


_TAR_LAYER = re.compile(r"[^/]+/(?:[^/]*[-.+])?tar(?:[.+](?:gzip|gz|zstd))?")
"""A media type naming a tar, plain or compressed: OCI and Docker layers (``…v1.tar+gzip``,
``…diff.tar.gzip``), and artifacts that are trees (a Helm chart, ``application/x-tar``)."""


def is_tar_layer(media_type: str) -> bool:
    """Whether a layer of ``media_type`` holds files to show (its compression is told by
    its bytes). Others cannot: an artifact's blob (a signature, an attestation, wasm, a
    model) or an encrypted layer (``+encrypted``: regfs holds no key)."""
    return bool(_TAR_LAYER.fullmatch(base_media_type(media_type)))


def base_media_type(content_type: str) -> str:
    """``Content-Type`` without parameters: ``a/b; charset=utf-8`` → ``a/b``."""
    return content_type.split(";", 1)[0].strip().lower()
