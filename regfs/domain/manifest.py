"""Parsed manifests, indexes and configs that mirror the JSON the registry served.

Domain layer: pure, stdlib only. Everything here parses untrusted bytes: any input either
parses into these frozen types or raises ``MalformedContent``, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from regfs.domain import mediatypes, schema1
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, VerificationFailed
from regfs.domain.platform import Platform, best_match

SCHEMA1_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"
"""On an index entry BuildKit adds: what the entry says of another (``attestation-manifest``:
provenance and SBOMs of the image named by ``vnd.docker.reference.digest``)."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A pointer to content: what it is, its digest and, except for schema1 layers, its size."""

    media_type: str
    digest: Digest
    size: int | None
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    """Covered by the manifest's digest: a layer's eStargz TOC digest is trusted from here."""
    artifact_type: str = ""
    """What an artifact is (in a referrers list: a SOCI index, a signature…)."""
    data: bytes | None = None
    """The content itself, embedded (OCI 1.1 ``data``, base64): unchecked here; used only
    once it hashes to ``digest`` (the manifest's digest vouches for the manifest, not for
    this field matching the content it names)."""

    def annotation(self, name: str) -> str | None:
        return next((value for key, value in self.annotations if key == name), None)


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """One image: a config and its layers, bottom first (schema1 is reordered to match)."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    schema1_config: bytes | None = None
    """The config of a schema1 image, which has no config blob: ``history[0].v1Compatibility``."""
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str = ""
    """What an artifact manifest is (OCI 1.1's ``artifactType``); empty for an image."""

    def annotation(self, name: str) -> str | None:
        return next((value for key, value in self.annotations if key == name), None)


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """An OCI index or Docker manifest list: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]

    def images(self) -> list[tuple[Platform, Descriptor]]:
        """The entries that are images to run on a platform, in the index's order: an image
        manifest with a platform, and neither an artifact (an ``artifactType`` other than an
        image config's, e.g. the SOCI v2 index ``soci convert`` lists beside its image,
        with the image's platform) nor an entry about another (BuildKit's attestations)."""
        return [
            (entry.platform, entry)
            for entry in self.manifests
            if entry.platform is not None
            and mediatypes.is_image_manifest(entry.media_type)
            and (not entry.artifact_type or entry.artifact_type in mediatypes.IMAGE_CONFIGS)
            and entry.annotation(REFERENCE_TYPE_ANNOTATION) is None
        ]

    def image_for(self, wanted: Platform) -> Descriptor | None:
        """The image to show or fetch for ``wanted`` (``best_match``), or None: the one
        choice the mount and every command make."""
        images = self.images()
        position = best_match(wanted, (platform for platform, _ in images))
        return None if position is None else images[position][1]


Manifest = ImageManifest | ImageIndex


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config regfs shows; the rest stays in the raw bytes."""

    platform: Platform | None
    created: str | None
    diff_ids: tuple[str, ...] = ()
    """``rootfs.diff_ids``: each layer's uncompressed digest, bottom first (a layer store
    gives them to podman); strings as written, checked by their users."""


def load_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Decode ``raw`` as a JSON object, or raise ``MalformedContent`` naming ``what``."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedContent(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise MalformedContent(f"{what} is not a JSON object")
    return document


def _field(document: dict[str, Any], key: str, kind: type, what: str, default: Any = None) -> Any:
    value = document.get(key, default)
    if value is default and default is not None:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedContent(f"{what}: {key!r} is missing or not a {kind.__name__}")
    return value


def _platform(value: Any, what: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedContent(f"{what}: platform is not an object")
    os_name = _field(value, "os", str, what)
    arch = _field(value, "architecture", str, what)
    variant = _field(value, "variant", str, what, default="")
    return Platform(os_name, arch, variant)


def _descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise MalformedContent(f"{what}: descriptor is not an object")
    size = _field(value, "size", int, what)
    if size < 0:
        raise MalformedContent(f"{what}: negative size")
    urls = _field(value, "urls", list, what, default=[])
    if not all(isinstance(url, str) for url in urls):
        raise MalformedContent(f"{what}: urls is not a list of strings")
    annotations = _annotations(value, what)
    try:
        digest = Digest.parse(_field(value, "digest", str, what))
    except MalformedContent as error:
        raise MalformedContent(f"{what}: {error}") from None
    return Descriptor(
        media_type=_field(value, "mediaType", str, what),
        digest=digest,
        size=size,
        platform=_platform(value.get("platform"), what),
        urls=tuple(urls),
        annotations=annotations,
        artifact_type=_field(value, "artifactType", str, what, default=""),
        data=_embedded(value.get("data")),
    )


def _embedded(encoded: object) -> bytes | None:
    """The descriptor's ``data``, decoded; None if absent or not base64 (the content is
    then fetched by its digest, as it would be without the field)."""
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None


def _annotations(document: dict[str, Any], what: str) -> tuple[tuple[str, str], ...]:
    annotations = _field(document, "annotations", dict, what, default={})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise MalformedContent(f"{what}: annotations are not all strings")
    return tuple(sorted(annotations.items()))


def _detect_media_type(document: dict[str, Any], content_type: str, *, is_jws: bool) -> str:
    """The JSON's own ``mediaType`` wins; then Content-Type; then the document's shape."""
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    served = mediatypes.base_media_type(content_type)
    if document.get("schemaVersion") == 1:
        if is_jws or not mediatypes.is_schema1(served):
            return mediatypes.DOCKER_SCHEMA1_SIGNED
        return served
    if mediatypes.is_index(served) or mediatypes.is_image_manifest(served):
        return served
    if "manifests" in document:
        return mediatypes.OCI_INDEX
    if "config" in document and "layers" in document:
        return mediatypes.OCI_MANIFEST
    raise MalformedContent(f"manifest of unknown type (Content-Type {served!r})")


def _list_of_descriptors(document: dict[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    items = _field(document, key, list, what)
    return tuple(_descriptor(item, f"{what} {key}[{i}]") for i, item in enumerate(items))


def _parse_schema1(document: dict[str, Any], media_type: str) -> ImageManifest:
    what = "schema1 manifest"
    fs_layers = _field(document, "fsLayers", list, what)
    history = _field(document, "history", list, what)
    if len(fs_layers) != len(history):
        raise MalformedContent(f"{what}: {len(fs_layers)} fsLayers but {len(history)} history")
    layers = []
    for layer, entry in zip(reversed(fs_layers), reversed(history), strict=True):
        if not isinstance(layer, dict):
            raise MalformedContent(f"{what}: fsLayers entry is not an object")
        if schema1.is_throwaway(entry):
            continue
        digest = Digest.parse(_field(layer, "blobSum", str, what))
        layers.append(Descriptor(SCHEMA1_LAYER, digest, None))
    return ImageManifest(media_type, None, tuple(layers), schema1.derived_config(history))


def signed_content(raw: bytes) -> bytes:
    """The bytes a manifest's digest covers: all of them, or a signed schema1's payload.

    Recognised by content, not Content-Type, since registries label schema1 inconsistently.
    """
    if b'"signatures"' not in raw:
        return raw
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return raw  # not JSON: hashed as is, and refused when parsed
    if isinstance(document, dict) and schema1.is_signed(document):
        return schema1.signed_payload(raw, document)
    return raw


def manifest_digest(raw: bytes, algorithm: str = "sha256") -> Digest:
    """The digest a registry gives these bytes (a signed schema1's covers its payload)."""
    return Digest.of(signed_content(raw), algorithm)


def parse_manifest(raw: bytes, content_type: str = "") -> Manifest:
    """Parse a manifest of any supported type; ``content_type`` is the served header.

    Only what the digest covers is parsed: for signed schema1, the payload.
    """
    signed = signed_content(raw)
    return _parse_signed(signed, content_type, is_jws=signed is not raw)


def verified_manifest(raw: bytes, content_type: str, digest: Digest) -> Manifest:
    """Parse ``raw`` only if it is what ``digest`` names: the one check for every manifest."""
    signed = signed_content(raw)
    if not digest.matches(signed):
        actual = Digest.of(signed, digest.algorithm)
        raise VerificationFailed(f"manifest bytes hash to {actual}, not {digest}")
    return _parse_signed(signed, content_type, is_jws=signed is not raw)


def _parse_signed(signed: bytes, content_type: str, *, is_jws: bool) -> Manifest:
    document = load_json_object(signed, "manifest")
    media_type = _detect_media_type(document, content_type, is_jws=is_jws)
    if mediatypes.is_index(media_type):
        return ImageIndex(media_type, _list_of_descriptors(document, "manifests", "index"))
    if mediatypes.is_image_manifest(media_type):
        config = _descriptor(document.get("config"), "manifest config")
        layers = _list_of_descriptors(document, "layers", "manifest")
        annotations = _annotations(document, "manifest")
        artifact_type = document.get("artifactType")  # nothing an image's reading needs
        artifact_type = artifact_type if isinstance(artifact_type, str) else ""
        return ImageManifest(
            media_type, config, layers, annotations=annotations, artifact_type=artifact_type
        )
    if mediatypes.is_schema1(media_type):
        return _parse_schema1(document, media_type)
    raise MalformedContent(f"not an image manifest or index: {media_type!r}")


def parse_image_config(raw: bytes) -> ImageConfig:
    """The platform and creation time of an image config (OCI, Docker or schema1-derived)."""
    document = load_json_object(raw, "image config")
    os_name, arch = document.get("os"), document.get("architecture")
    variant = document.get("variant", "")
    platform = None
    if isinstance(os_name, str) and isinstance(arch, str) and isinstance(variant, str):
        platform = Platform(os_name, arch, variant)
    created = document.get("created")
    rootfs = document.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        diff_ids = []
    return ImageConfig(platform, created if isinstance(created, str) else None, tuple(diff_ids))
