"""Which layer blob to read, and where from: ``LayerRef``.

Layers layer: a value type, no IO. A layer is named by its digest, but read through a
registry and repository (content belongs to repositories), and in the context of the
image that names it: that image's annotations may give it a TOC or a SOCI index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.manifest import Descriptor, ImageManifest
from regfs.domain.soci import INDEX_DIGEST_ANNOTATION

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LayerRef:
    """Where a layer blob can be fetched: the registry, repository and its descriptor."""

    host: str
    repository: str
    descriptor: Descriptor
    image: Digest | None = None
    """The image manifest naming the layer: its SOCI index may have the layer's zTOC."""
    soci_index: Digest | None = None
    """The SOCI index that manifest names in its annotation (SOCI v2), if any."""

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


def layer_refs(
    host: str, repository: str, image: Digest, manifest: ImageManifest
) -> list[LayerRef]:
    """The layers of image manifest ``image``, bottom first, each knowing its image and the
    SOCI index the manifest's annotation names (SOCI v2), if that is a valid digest."""
    named = manifest.annotation(INDEX_DIGEST_ANNOTATION)
    soci_index = None
    if named is not None:
        try:
            soci_index = Digest.parse(named)
        except MalformedContent as error:
            log.warning("%s/%s@%s: %s: %s", host, repository, image, INDEX_DIGEST_ANNOTATION,
                        error)  # fmt: skip
    return [
        LayerRef(host, repository, descriptor, image=image, soci_index=soci_index)
        for descriptor in manifest.layers
    ]
