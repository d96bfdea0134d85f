"""Which image manifest a reference names, for the commands that work on whole images.

Registry layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, NotFound
from regfs.domain.manifest import Descriptor, ImageIndex, ImageManifest, verified_manifest
from regfs.domain.platform import Platform
from regfs.registry.client import RegistryClient

ManifestByDigest = Callable[[str, str, Digest], Awaitable[tuple[bytes, str]]]
"""(host, repository, digest) → the manifest's bytes and media type."""


async def resolve_image(
    client: RegistryClient,
    host: str,
    repository: str,
    reference: str,
    platform: Platform,
    *,
    by_digest: ManifestByDigest | None = None,
) -> tuple[ImageManifest, Descriptor]:
    """The image manifest ``reference`` names (for an index, ``platform``'s), and a
    descriptor of it to be the SOCI index's subject. ``by_digest`` fetches what is named
    by digest (``regfs prefetch`` keeps it in the cache dir that way)."""

    async def fetch(reference: str) -> tuple[bytes, str, Digest]:
        if ":" in reference and by_digest is not None:
            digest = Digest.parse(reference)
            return *(await by_digest(host, repository, digest)), digest
        fetched = await client.get_manifest(host, repository, reference)
        expected = Digest.parse(reference) if ":" in reference else fetched.digest
        return fetched.raw, fetched.media_type, expected

    raw, media_type, expected = await fetch(reference)
    manifest = verified_manifest(raw, media_type, expected)
    if isinstance(manifest, ImageIndex):
        chosen = manifest.image_for(platform)
        if chosen is None:
            raise NotFound(f"{_named(host, repository, reference)}: no image for {platform}")
        raw, media_type, expected = await fetch(str(chosen.digest))
        manifest = verified_manifest(raw, media_type, expected)
    if not isinstance(manifest, ImageManifest) or manifest.config is None:
        raise MalformedContent(f"{_named(host, repository, reference)}: not an image manifest")
    return manifest, Descriptor(manifest.media_type, expected, len(raw))


def _named(host: str, repository: str, reference: str) -> str:
    """The image as a user writes it: ``@`` before a digest, ``:`` before a tag."""
    return f"{host}/{repository}{'@' if ':' in reference else ':'}{reference}"
