"""An image as the cache dir holds it, read without its registry: what a pin holds.

Application layer. ``regfs cache`` never waits on a registry (pinning must work while it
is away), so here a tag names the image its registry last named to a mount or ``regfs
prefetch`` (kept in ``answers/``), and the manifests and config are the copies kept in
``chunks/`` with their repository's confirmation (``cache/objects.py``), each checked
against its digest. An index is read as a mount reads it: its image for ``--platform``.
``regfs prefetch --pin`` reads the image the same way once it has fetched it, so that
both pin the same things.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from regfs.cache.answers import KeptAnswers, tag_question, v1_index_question
from regfs.cache.chunks import ChunkCache
from regfs.cache.confirmations import Confirmations
from regfs.cache.layout import CacheLayout
from regfs.cache.objects import KeptObjects
from regfs.cache.pin_records import Pin
from regfs.domain.digest import Digest
from regfs.domain.errors import RegfsError
from regfs.domain.manifest import ImageIndex, ImageManifest, Manifest, verified_manifest
from regfs.domain.platform import Platform
from regfs.domain.reference import image_reference
from regfs.layers.layer_ref import LayerRef, layer_refs
from regfs.layers.pinning import pinned_layer


class NotInCache(Exception):
    """The cache dir cannot say what the image is."""


@dataclass(frozen=True, slots=True)
class CachedImage:
    reference: str
    """``HOST/REPOSITORY:TAG`` or ``…@DIGEST``."""
    digest: Digest
    """What the reference names: an image manifest or an index."""
    image: Digest
    layers: tuple[LayerRef, ...]
    objects: dict[str, int]
    """Hex sha256 → size of its manifests, config and SOCI index kept in the cache."""
    missing: tuple[str, ...]
    """Its config or SOCI index, if not kept."""


def cached_image(
    layout: CacheLayout,
    host: str,
    repository: str,
    reference: str,
    platform: Platform,
    *,
    named: Digest | None = None,
) -> CachedImage:
    """The image ``reference`` names as far as the cache dir knows it (``named``: the
    digest it names, when the caller knows it); ``NotInCache`` if it cannot say. Blocking
    (small reads)."""
    name = image_reference(host, repository, reference)
    kept = KeptObjects(ChunkCache(layout, 1 << 62), Confirmations(layout))
    objects: dict[str, int] = {}

    def manifest(digest: Digest) -> Manifest:
        found = kept.load(host, repository, digest)
        if found is None or found.media_type is None:
            raise NotInCache(f"{name}: its manifest {digest} is not in the cache")
        try:
            parsed = verified_manifest(found.data, found.media_type, digest)
        except RegfsError as error:
            raise NotInCache(f"{name}: {error}") from None
        objects[digest.hex] = len(found.data)
        return parsed

    named = named or _named_digest(layout, host, repository, reference, name)
    image, manifest_of_image = named, manifest(named)
    if isinstance(manifest_of_image, ImageIndex):
        chosen = manifest_of_image.image_for(platform)
        if chosen is None:
            raise NotInCache(f"{name}: its index has no image for {platform}")
        image, manifest_of_image = chosen.digest, manifest(chosen.digest)
    if not isinstance(manifest_of_image, ImageManifest) or manifest_of_image.config is None:
        raise NotInCache(f"{name}: not an image that can be pinned (schema1, or no config)")
    layers = layer_refs(host, repository, image, manifest_of_image)
    missing = []
    for what, digest in _other_objects(layout, layers, manifest_of_image.config.digest):
        found = kept.load(host, repository, digest)
        if found is None:
            missing.append(f"its {what} {digest}")
        else:
            objects[digest.hex] = len(found.data)
    return CachedImage(name, named, image, tuple(layers), objects, tuple(missing))


def _named_digest(
    layout: CacheLayout, host: str, repository: str, reference: str, name: str
) -> Digest:
    if ":" in reference:
        return Digest.parse(reference)
    heard = KeptAnswers(layout).load(tag_question(host, repository, reference))
    if heard is None or not isinstance(heard.answer, str):
        raise NotInCache(f"{name}: the cache does not know which image the tag names")
    try:
        return Digest.parse(heard.answer)
    except RegfsError as error:
        raise NotInCache(f"{name}: {error}") from None


def _other_objects(
    layout: CacheLayout, layers: list[LayerRef], config: Digest
) -> list[tuple[str, Digest]]:
    """The config and, if the image has one, the SOCI index a mount reads it through:
    the one its manifest names (v2), else the v1 referrer last found for it."""
    found = [("config", config)]
    first = layers[0] if layers else None
    soci = first.soci_index if first is not None else None
    if first is not None and first.image is not None and soci is None:
        question = v1_index_question(first.host, first.repository, first.image)
        kept = KeptAnswers(layout).load(question)
        soci = Digest.parse(kept.answer) if kept and isinstance(kept.answer, str) else None
    return found + ([("SOCI index", soci)] if soci is not None else [])


def pin_now(layout: CacheLayout, image: CachedImage, platform: Platform) -> Pin:
    """A pin of everything the cache dir holds of ``image`` now. Blocking."""
    layers = tuple(pinned_layer(layout, layer.digest, layer.descriptor.size or 0)
                   for layer in image.layers)  # fmt: skip
    return Pin(image.reference, str(image.digest), str(image.image), str(platform), time.time(),
               image.objects, layers)  # fmt: skip


def missing_from(layout: CacheLayout, image: CachedImage, pin: Pin) -> list[str]:
    """What of ``image`` the cache dir lacks (so ``pin`` cannot hold it yet). Blocking."""
    chunks = ChunkCache(layout, 1 << 62)
    missing = list(image.missing)
    for position, layer in enumerate(pin.layers):
        if layer.stored is None:
            missing.append(f"layer {position} {layer.digest}: not indexed")
            continue
        absent = sum(not chunks.has(bytes.fromhex(name)) for name in layer.pieces)
        if absent:
            missing.append(f"layer {position} {layer.digest}: {absent} of "
                           f"{len(layer.pieces)} pieces not cached")  # fmt: skip
    return missing
