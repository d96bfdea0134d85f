"""Which image manifest a reference names, for the commands that work on whole images.

Registry layer.
"""

from __future__ import annotations

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, NotFound
from regfs.domain.manifest import Descriptor, ImageIndex, ImageManifest, verified_manifest
from regfs.domain.platform import Platform
from regfs.registry.client import RegistryClient


async def resolve_image(
    client: RegistryClient, host: str, repository: str, reference: str, platform: Platform
) -> tuple[ImageManifest, Descriptor]:
    """The image manifest ``reference`` names (for an index, ``platform``'s), and a
    descriptor of it to be the SOCI index's subject."""
    fetched = await client.get_manifest(host, repository, reference)
    expected = Digest.parse(reference) if ":" in reference else fetched.digest
    manifest = verified_manifest(fetched.raw, fetched.media_type, expected)
    if isinstance(manifest, ImageIndex):
        chosen = manifest.image_for(platform)
        if chosen is None:
            raise NotFound(f"{host}/{repository}:{reference}: no image for {platform}")
        expected = chosen.digest
        fetched = await client.get_manifest(host, repository, str(expected))
        manifest = verified_manifest(fetched.raw, fetched.media_type, expected)
    if not isinstance(manifest, ImageManifest) or manifest.config is None:
        raise MalformedContent(f"{host}/{repository}:{reference}: not an image manifest")
    return manifest, Descriptor(manifest.media_type, expected, len(fetched.raw))
