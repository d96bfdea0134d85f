"""Where a layer's indexes are kept in the cache dir, and what each must say of itself.

Layers layer: names only, no IO. A layer may have up to three kinds of index, each in a
file of its own, because each numbers entries and places data its own way:

- ``<digest>.sqlite``: made from the whole blob after it matched its digest. It is the
  truth the digest vouches for, so every image naming the digest may use it, and it is
  preferred to the others whenever it exists.
- ``<digest>.toc-<hash>.sqlite``: made from an eStargz or zstd:chunked TOC, which the image
  names by annotation; named after those annotations, since another image may name the
  same layer with another TOC, or none.
- ``<digest>.soci-<hash>.sqlite``: made from a SOCI zTOC, named after the zTOC's digest.

A TOC found to disagree with its layer's tar leaves a verdict in the cache dir's
``verdicts/`` (``CacheLayout.verdict_for``: what differs, as text; outside ``indexes/``, so
the cache's eviction never takes it): such a TOC is not used again, the whole blob is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from regfs.cache.layout import CacheLayout
from regfs.domain.manifest import Descriptor
from regfs.layers.formats.toc import TOC_ANNOTATIONS
from regfs.layers.index.meta import BUILT_FROM_BLOB, ExpectedIndex
from regfs.layers.layer_ref import LayerRef


def toc_inputs(layer: LayerRef) -> str | None:
    """A hash of the layer's TOC annotations (the TOC an index would be built from), or
    None if it has none."""
    toc = [pair for pair in layer.descriptor.annotations if pair[0] in TOC_ANNOTATIONS]
    return hashlib.sha256(repr(toc).encode()).hexdigest()[:32] if toc else None


class IndexFiles:
    """The index files of layers under one cache dir's ``indexes/``."""

    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout
        self.directory = layout.indexes

    def whole(self, layer: LayerRef) -> tuple[Path, ExpectedIndex]:
        return (
            self.directory / f"{layer.digest.dir_name}.sqlite",
            _expected(layer, BUILT_FROM_BLOB),
        )

    def toc(self, layer: LayerRef) -> tuple[Path, ExpectedIndex] | None:
        inputs = toc_inputs(layer)
        if inputs is None:
            return None
        return (
            self.directory / f"{layer.digest.dir_name}.toc-{inputs}.sqlite",
            _expected(layer, f"toc {inputs}"),
        )

    def soci(self, layer: LayerRef, ztoc: Descriptor) -> tuple[Path, ExpectedIndex]:
        return (
            self.directory / f"{layer.digest.dir_name}.soci-{ztoc.digest.hex[:32]}.sqlite",
            _expected(layer, f"ztoc {ztoc.digest}"),
        )

    def disagreement(self, layer: LayerRef) -> Path | None:
        """Where a verdict that the layer's TOC disagrees with its tar is kept, if it has a
        TOC."""
        toc = self.toc(layer)
        return None if toc is None else self._layout.verdict_for(toc[0])


def _expected(layer: LayerRef, built_from: str) -> ExpectedIndex:
    return ExpectedIndex(str(layer.digest), layer.descriptor.size, built_from)
