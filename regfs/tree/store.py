"""A containers/storage Additional Layer Store: ``STORE/<base64 ref>/<layer digest>/``.

Tree layer. podman and CRI-O (``additionallayerstores = ["STORE:ref"]`` in storage.conf)
look a layer up by the exact reference they pull, base64-encoded, and the layer's digest
(``sha256:<hex>``). They stat ``diff``, ``info`` and ``blob``; any error means "not here"
and they pull that layer themselves, so a lookup regfs cannot answer fails (ENOENT,
EACCES, EIO within ``--timeout``), never waits. Below a reference only the layers of its
image exist (of an index: the image for the mount's platform), and those the cache dir
served for its repository before: podman follows its link to a layer's ``diff`` at every
container start, after the tag moved too.

- ``diff/``: the layer's tree in overlayfs lowerdir form, the same node as a browse
  mount's layer dir ``i/`` (indexed on first use, read lazily, verified);
- ``info``: the JSON containers/storage copies into its own layer record (its
  ``diff-digest``, the config's diff_id, is required: podman 4.3 panics without it);
- ``blob``: the compressed blob, read only by ``podman save``/``push`` (``CompressedBlobs``).

Reference counting: podman creates ``use`` in a layer dir and removes the layer dir; both
are counted (``LayerUsage``) and answered ENOENT, as the protocol asks. Every other write
is refused (EROFS) by the FUSE layer.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from typing import NoReturn

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, NotFound
from regfs.domain.manifest import ImageIndex, ImageManifest, parse_image_config
from regfs.domain.reference import parse_pulled_reference
from regfs.layers.formats.start_files import start_files
from regfs.layers.layer_ref import LayerRef
from regfs.tree.context import TreeContext
from regfs.tree.image import image_layers
from regfs.tree.layer import LayerRoot
from regfs.tree.layer_usage import LayerUsage
from regfs.tree.metadata import Image
from regfs.tree.node import Directory, File, Kind, Node, Stat
from regfs.tree.xattrs import DIGEST_XATTR, STATUS_XATTR

log = logging.getLogger(__name__)

COUNTED_DIRECTORY = 0o777
"""Reference and layer dirs: podman creates ``use`` in one and removes the other, also
rootless (as "others" to a root mount): the kernel must let it ask. The daemon itself
refuses every write but these two, which it only counts."""
USE_FILE = "use"
COMPRESSION = {"gzip": 2, "zstd": 4}
"""containers/storage's numbers for a layer's compression (pkg/archive); 0: none."""


def _counted_directory(context: TreeContext) -> Stat:
    """Expiring: a tag may move, and with it the layers its dir holds."""
    return Stat(Kind.DIRECTORY, 0, COUNTED_DIRECTORY, immutable=False,
                mtime_ns=context.mount_time_ns)  # fmt: skip


class StoreRoot(Directory):
    """The store's root: a directory per reference looked up (lists those in use)."""

    def __init__(self, context: TreeContext, usage: LayerUsage) -> None:
        self.context = context
        self.usage = usage
        self.key = ("store-root",)

    async def stat(self) -> Stat:
        return Stat.expiring(Kind.DIRECTORY, 0, self.context.mount_time_ns)

    async def lookup(self, name: str) -> Node:
        try:
            reference = base64.b64decode(name, validate=True).decode()
            parse_pulled_reference(reference)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise NotFound(f"{name!r} is not the base64 of an image reference") from None
        return ReferenceDir(self.context, self.usage, name, reference)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        names = {base64.b64encode(ref.encode()).decode(): ref for ref in self.usage.references()}
        return [
            (name, ReferenceDir(self.context, self.usage, name, reference))
            for name, reference in names.items()
        ]

    async def xattr(self, name: str) -> bytes | None:
        """``user.regfs.status`` (asked for by name, not listed): the mount's state."""
        if name == STATUS_XATTR:
            return json.dumps(self.context.status(), indent=1).encode()
        return await super().xattr(name)


class ReferenceDir(Directory):
    """``<base64 ref>/``: the layers of the image the reference names, by digest."""

    def __init__(self, context: TreeContext, usage: LayerUsage, name: str, reference: str):
        self.context = context
        self.usage = usage
        self.reference = reference
        self.host, self.repository, self.tag_or_digest = parse_pulled_reference(reference)
        self.key = ("store-reference", name)

    async def stat(self) -> Stat:
        return _counted_directory(self.context)

    async def image(self) -> Image:
        """The image manifest the reference names (of an index: the platform's image)."""
        metadata = self.context.metadata
        try:
            digest = Digest.parse(self.tag_or_digest)
        except MalformedContent:
            digest = await metadata.tag_digest(self.host, self.repository, self.tag_or_digest)
        image = await metadata.image(self.host, self.repository, digest)
        if isinstance(image.manifest, ImageIndex):
            chosen = image.manifest.image_for(self.context.platform)
            if chosen is None:
                raise NotFound(f"{self.reference}: no image for {self.context.platform}")
            image = await metadata.image(self.host, self.repository, chosen.digest)
        if not isinstance(image.manifest, ImageManifest) or image.manifest.config is None:
            raise NotFound(f"{self.reference}: not served by the layer store (schema1)")
        return image

    async def entries(self) -> Sequence[tuple[str, Node]]:
        image = await self.image()
        layers = image_layers(image)
        return [(str(layer.digest), self._layer_dir(image, n)) for n, layer in enumerate(layers)]

    def _layer_dir(self, image: Image, position: int) -> StoreLayerDir:
        return StoreLayerDir(self.context, self.usage, self.reference, image, position)

    async def lookup(self, name: str) -> Node:
        try:
            digest = Digest.parse(name)
        except MalformedContent:
            raise NotFound(f"{self.reference}: {name!r} is not a layer digest") from None
        image = await self._image_with(digest)
        layers = image_layers(image)
        position = next(n for n, layer in enumerate(layers) if layer.digest == digest)
        # podman asks for each layer's info in turn, waiting, from the top down:
        # index them all now, that one first (they are indexed one at a time)
        layer = layers[position]
        order = [layer, *(other for other in reversed(layers) if other != layer)]
        starts = self.context.layers.starts
        starts.for_runtime(order, start_files(self.context.platform.architecture))
        starts.recorded_soon(layers)
        return self._layer_dir(image, position)

    async def _image_with(self, layer: Digest) -> Image:
        """The image the reference names if it has ``layer``, else an image of this
        repository that ``layer`` was served for before, recorded in the cache dir (by
        this mount or an earlier one): podman's record of a store layer is a link to
        ``STORE/<ref>/<digest>/diff``, which it follows at every container start, long
        after the pull, and an image it pulled must still run once the tag names another
        image, or none (as after its own pull). A layer podman has not pulled yet was never
        recorded: a tag that moved within the TTL stays ``NotFound``."""
        try:
            image = await self.image()
        except NotFound:
            if (earlier := await self._earlier_image(layer)) is None:
                raise
            return earlier
        if _has_layer(image, layer):
            return image
        if (earlier := await self._earlier_image(layer)) is not None:
            return earlier
        raise NotFound(f"{self.reference}: no layer {layer} in its image {image.digest}")

    async def _earlier_image(self, layer: Digest) -> Image | None:
        for use in await self.context.layers.layer_images.recorded(layer):
            if (use.host, use.repository) != (self.host, self.repository):
                continue
            try:
                image = await self.context.metadata.image(
                    self.host, self.repository, Digest.parse(use.digest)
                )
            except (NotFound, MalformedContent):
                continue  # gone from the registry and the cache, or a damaged record
            if _has_layer(image, layer):
                log.info("%s: layer %s served as %s's, which the reference named before",
                         self.reference, layer, image.digest)  # fmt: skip
                return image
        return None

    async def remove_directory(self, name: str) -> NoReturn:
        left = self.usage.release(self.reference, name)
        log.info("%s: layer %s released (%d uses left)", self.reference, name, left)
        raise NotFound(f"{self.reference}: {name} released, as the layer store protocol asks")


def _has_layer(image: Image, layer: Digest) -> bool:
    """Whether ``image`` is one the store serves (not an index, not schema1) with ``layer``."""
    manifest = image.manifest
    if not isinstance(manifest, ImageManifest) or manifest.config is None:
        return False
    return any(layer_ref.digest == layer for layer_ref in image_layers(image))


class StoreLayerDir(Directory):
    """``<layer digest>/``: ``diff/``, ``info`` and ``blob`` of one layer of the image."""

    def __init__(
        self, context: TreeContext, usage: LayerUsage, reference: str, image: Image,
        position: int,
    ) -> None:  # fmt: skip
        self.context = context
        self.usage = usage
        self.reference = reference
        self.image = image
        self.position = position
        self.layer: LayerRef = image_layers(image)[position]
        self.key = ("store-layer", reference, self.layer.digest)

    async def stat(self) -> Stat:
        return _counted_directory(self.context)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        return [(name, await self.lookup(name)) for name in ("diff", "info", "blob")]

    async def lookup(self, name: str) -> Node:
        if name == "diff":
            return LayerRoot(self.context, self.layer, self.key)
        if name == "info":
            return InfoFile(self.context, self.layer, await self._info())
        if name == "blob":
            return BlobFile(self.context, self.layer)
        raise NotFound(f"{self.layer}: no {name!r} in a layer store's layer dir")

    async def _info(self) -> bytes:
        """What containers/storage copies into its layer record. The layer is indexed
        (its TOC or zTOC only where it has one): its uncompressed size is asked, and known
        once a TOC or zTOC is read, before the index is written."""
        manifest = self.image.manifest
        assert isinstance(manifest, ImageManifest) and manifest.config is not None
        image = self.image
        config = await self.context.metadata.config(image.host, image.repository,
                                                    manifest.config)  # fmt: skip
        diff_ids = parse_image_config(config).diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise MalformedContent(
                f"{self.reference}: config lists {len(diff_ids)} diff_ids for "
                f"{len(manifest.layers)} layers"
            )
        diff_id = Digest.parse(diff_ids[self.position])
        diff_size = await self.context.layers.diff_size(self.layer)
        media_type = self.layer.descriptor.media_type
        compression = next((n for name, n in COMPRESSION.items() if name in media_type), 0)
        info = {
            "diff-digest": str(diff_id),
            "diff-size": diff_size,
            "compressed-diff-digest": str(self.layer.digest),
            "compressed-size": self.layer.descriptor.size,
            "compression": compression,
        }
        return json.dumps(info).encode()

    async def create(self, name: str) -> NoReturn:
        if name != USE_FILE:
            await super().create(name)
        uses = self.usage.use(self.reference, str(self.layer.digest))
        log.info("%s: layer %s in use (%d uses)", self.reference, self.layer.digest, uses)
        raise NotFound(f"{self.layer}: use counted, as the layer store protocol asks")

    async def xattr(self, name: str) -> bytes | None:
        if name == DIGEST_XATTR:
            return str(self.layer.digest).encode()
        return None


class InfoFile(File):
    """``info``: the layer's record for containers/storage, as JSON."""

    def __init__(self, context: TreeContext, layer: LayerRef, data: bytes) -> None:
        self.context = context
        self.data = data
        self.key = ("store-info", layer.host, layer.repository, layer.image, layer.digest)

    async def stat(self) -> Stat:
        return Stat.fixed(Kind.FILE, len(self.data), self.context.mount_time_ns)

    async def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class BlobFile(File):
    """``blob``: the layer's compressed blob, fetched when read, verified."""

    def __init__(self, context: TreeContext, layer: LayerRef) -> None:
        self.context = context
        self.layer = layer
        self.key = ("store-blob", layer.host, layer.repository, layer.digest)

    async def stat(self) -> Stat:
        size = self.layer.descriptor.size or 0
        return Stat.fixed(Kind.FILE, size, self.context.mount_time_ns)

    async def read(self, offset: int, size: int) -> bytes:
        return await self.context.layers.read_blob(self.layer, offset, size)
