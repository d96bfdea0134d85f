"""Digest directories: an image's manifest and config, or an index's platforms.

Tree layer. Everything here is named by a digest and so never changes: stats are marked
immutable and the kernel caches them without expiry.

An index dir shows its own ``manifest`` (the bytes its digest names), one symlink per
platform (``linux-arm64-v8 -> ../sha256-…``) and, so that ``latest/config`` works on a
multi-platform tag, the entries of the image for the mount's platform.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import NoEntry
from regfs.domain.manifest import ImageIndex, ImageManifest, parse_image_config
from regfs.domain.platform import Platform
from regfs.layers.layer_ref import LayerRef, layer_refs
from regfs.tree.context import TreeContext
from regfs.tree.layer import LayerRoot, fetched_text
from regfs.tree.metadata import Image
from regfs.tree.node import (
    Directory,
    File,
    Kind,
    Node,
    Stat,
    Symlink,
)
from regfs.tree.rootfs import EmptyRootfs, MergedImage, RootfsDir
from regfs.tree.xattrs import (
    DIGEST_XATTR,
    FETCHED_XATTR,
    MEDIA_TYPE_XATTR,
    PLATFORM_XATTR,
    PROBED_BY_LS,
)

log = logging.getLogger(__name__)


class ImageDir(Directory):
    """``sha256-<hex>/`` in a repository: an image manifest or an index."""

    def __init__(self, context: TreeContext, host: str, repository: str, digest: Digest) -> None:
        self.context = context
        self.host = host
        self.repository = repository
        self.digest = digest
        self.key = ("image", host, repository, digest)

    async def _image(self) -> Image:
        return await self.context.metadata.image(self.host, self.repository, self.digest)

    async def stat(self) -> Stat:
        return Stat.fixed(Kind.DIRECTORY, 0, self.context.mount_time_ns)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        image = await self._image()
        result: list[tuple[str, Node]] = [("manifest", ManifestFile(self.context, image))]
        if isinstance(image.manifest, ImageIndex):
            result += self._platform_links(image.manifest)
            chosen = await self._platform_image(image.manifest)
            if chosen is not None:
                result += _image_entries(self.context, chosen, self.key)
        else:
            result += _image_entries(self.context, image, self.key)
        return result

    async def lookup(self, name: str) -> Node:
        for entry_name, node in await self.entries():
            if entry_name == name:
                return node
        raise NoEntry(f"{self.host}/{self.repository}@{self.digest}: no entry {name!r}")

    def _platform_links(self, index: ImageIndex) -> list[tuple[str, Node]]:
        links: dict[str, Node] = {}
        for platform, descriptor in index.images():
            name = platform.normalized().dir_name
            if not platform.normalized().makes_file_name:
                log.warning("%s/%s@%s: platform %r of %s makes no file name: not linked",
                            self.host, self.repository, self.digest, name,
                            descriptor.digest)  # fmt: skip
                continue
            if name in links:
                log.debug(
                    "%s/%s@%s: second manifest for %s ignored",
                    self.host,
                    self.repository,
                    self.digest,
                    name,
                )
                continue
            links[name] = PlatformLink(self.context, self.key, name, descriptor.digest)
        return list(links.items())

    async def _platform_image(self, index: ImageIndex) -> Image | None:
        descriptor = index.image_for(self.context.platform)
        if descriptor is None:
            return None
        return await self.context.metadata.image(self.host, self.repository, descriptor.digest)

    async def xattr(self, name: str) -> bytes | None:
        if name in PROBED_BY_LS:  # `ls -l` must not fetch the config for its platform
            return None
        if name == DIGEST_XATTR:  # these two need no config and no layer index
            return str(self.digest).encode()
        if name == MEDIA_TYPE_XATTR:
            return (await self._image()).media_type.encode()
        return await super().xattr(name)

    async def xattrs(self) -> dict[str, bytes]:
        image = await self._image()
        attributes = {
            DIGEST_XATTR: str(self.digest).encode(),
            MEDIA_TYPE_XATTR: image.media_type.encode(),
        }
        platform = await self._platform(image)
        if platform is not None:
            attributes[PLATFORM_XATTR] = str(platform).encode()
        shown = image
        if isinstance(image.manifest, ImageIndex):
            shown = await self._platform_image(image.manifest) or image
        if isinstance(shown.manifest, ImageManifest):
            layers = image_layers(shown)
            fetched = sum([await self.context.layers.fetched(layer) for layer in layers])
            size = sum(layer.descriptor.size or 0 for layer in layers)
            attributes[FETCHED_XATTR] = fetched_text(fetched, size)
        return attributes

    async def _platform(self, image: Image) -> Platform | None:
        """The image's platform: the chosen one for an index, the config's otherwise; an
        artifact's config (``{}``, a chart's, any bytes) is no image config and names none."""
        if isinstance(image.manifest, ImageIndex):
            chosen = image.manifest.image_for(self.context.platform)
            return chosen.platform.normalized() if chosen and chosen.platform else None
        described = image.manifest.config
        if described is not None and described.media_type not in mediatypes.IMAGE_CONFIGS:
            return None
        config = await ConfigFile(self.context, image).data()
        platform = parse_image_config(config).platform
        return platform.normalized() if platform else None


def _image_entries(context: TreeContext, image: Image, place: Hashable) -> list[tuple[str, Node]]:
    """What an image manifest contributes to a digest dir (besides its ``manifest``):
    its config, one dir per layer (bottom first), their links, and the merged rootfs.
    ``place`` is the key of that digest dir (an index dir shows its platform's image):
    the dirs shown here are its own, not those of another dir showing the same image."""
    assert isinstance(image.manifest, ImageManifest)
    layers = image_layers(image)
    result: list[tuple[str, Node]] = [("config", ConfigFile(context, image))]
    result += [
        (str(position), LayerRoot(context, layer, (place, position), layers))
        for position, layer in enumerate(layers)
    ]
    if layers:
        result += [
            ("bottom", LayerLink(context, image, "bottom", "0")),
            ("top", LayerLink(context, image, "top", str(len(layers) - 1))),
        ]
    by_digest: dict[str, str] = {}
    for position, layer in enumerate(layers):
        by_digest.setdefault(layer.digest.dir_name, str(position))
    result += [
        (name, LayerLink(context, image, name, target)) for name, target in by_digest.items()
    ]
    if not layers:
        return [*result, ("rootfs", EmptyRootfs(context, image.digest, place))]
    merged = MergedImage(context, image.host, image.repository, image.digest, layers, place=place)
    result.append(("rootfs", RootfsDir(merged, (), None)))
    return result


def image_layers(image: Image) -> list[LayerRef]:
    """The layers of an image manifest, bottom first."""
    assert isinstance(image.manifest, ImageManifest)
    return layer_refs(image.host, image.repository, image.digest, image.manifest)


class ManifestFile(File):
    """The manifest's exact bytes, as served and verified."""

    def __init__(self, context: TreeContext, image: Image) -> None:
        self.context = context
        self.image = image
        self.key: Hashable = ("manifest", image.host, image.repository, image.digest)

    async def stat(self) -> Stat:
        return Stat.fixed(Kind.FILE, len(self.image.raw), self.context.mount_time_ns)

    async def read(self, offset: int, size: int) -> bytes:
        return self.image.raw[offset : offset + size]


class ConfigFile(File):
    """The image config blob, or for schema1 the config its history carries."""

    def __init__(self, context: TreeContext, image: Image) -> None:
        assert isinstance(image.manifest, ImageManifest)
        self.context = context
        self.image = image
        self.manifest = image.manifest
        self.key = ("config", image.host, image.repository, image.digest)

    async def stat(self) -> Stat:
        if self.manifest.config is not None:
            size = self.manifest.config.size or 0
        else:
            size = len(self.manifest.schema1_config or b"")
        return Stat.fixed(Kind.FILE, size, self.context.mount_time_ns)

    async def data(self) -> bytes:
        if self.manifest.config is None:
            return self.manifest.schema1_config or b""
        image = self.image
        return await self.context.metadata.config(
            image.host, image.repository, self.manifest.config
        )

    async def read(self, offset: int, size: int) -> bytes:
        return (await self.data())[offset : offset + size]


class LayerLink(Symlink):
    """``bottom``, ``top`` and ``sha256-<layer hex>``: links to a layer dir by number."""

    def __init__(self, context: TreeContext, image: Image, name: str, target: str) -> None:
        self.context = context
        self._target = target
        self.key = ("layer-link", image.host, image.repository, image.digest, name)

    async def stat(self) -> Stat:
        return Stat.fixed(Kind.SYMLINK, len(self._target), self.context.mount_time_ns)

    async def target(self) -> str:
        return self._target


class PlatformLink(Symlink):
    """``linux-arm64-v8 -> ../sha256-<hex>`` in an index dir: a sibling digest dir."""

    def __init__(
        self, context: TreeContext, index_key: Hashable, name: str, digest: Digest
    ) -> None:
        self.context = context
        self.digest = digest
        self.key = ("platform", index_key, name)

    async def stat(self) -> Stat:
        return Stat.fixed(Kind.SYMLINK, len(await self.target()), self.context.mount_time_ns)

    async def target(self) -> str:
        return f"../{self.digest.dir_name}"
