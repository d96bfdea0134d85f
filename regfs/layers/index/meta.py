"""What a layer index says of itself (its ``meta`` table), and what it must say to be used.

Layers layer: pure, no IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from regfs.layers.formats.toc import TOC_FORMATS

SCHEMA_VERSION = 5
"""``schema.sql``'s version (its history is written there); a file of another is absent."""
BUILT_FROM_BLOB = "blob"
SOCI_COMPRESSION = "soci"
"""The ``compression`` of an index built from a SOCI zTOC."""


class IndexKind(enum.Enum):
    """How an index lays out its layer's stream, and so how the layer is read."""

    WHOLE = "whole"
    """Made from the whole blob (gzip, zstd or plain tar): fixed chunks of the tar."""
    TOC = "toc"
    """Made from an eStargz or zstd:chunked TOC: its chunks, on a virtual stream."""
    SOCI = "soci"
    """Made from a SOCI zTOC: spans of the tar, inflated from their checkpoints."""


@dataclass(frozen=True, slots=True)
class IndexMeta:
    digest: str
    compression: str
    """``gzip``, ``zstd`` or ``none``."""
    compressed_size: int
    uncompressed_size: int
    chunk_size: int
    prefetch_end: int = 0
    """For a TOC layer: the end of what its builder wants fetched first (``toc.py``)."""
    built_from: str = BUILT_FROM_BLOB
    """What the index was made from: ``blob`` (the whole blob, checked against its digest),
    ``toc <hash of the TOC annotations>`` or ``ztoc <zTOC digest>``."""

    @property
    def kind(self) -> IndexKind:
        if self.compression in TOC_FORMATS:
            return IndexKind.TOC
        if self.compression == SOCI_COMPRESSION:
            return IndexKind.SOCI
        return IndexKind.WHOLE


@dataclass(frozen=True, slots=True)
class ExpectedIndex:
    """What an index file must say of itself to be used for a layer: the cache dir is a
    trust boundary, and a file there (shared by mounts, copied, damaged) names a layer's
    every later read."""

    digest: str
    compressed_size: int | None
    built_from: str

    def mismatch(self, meta: IndexMeta) -> str | None:
        """Why ``meta`` is not this layer's index, or None if it is."""
        if meta.digest != self.digest:
            return f"it indexes {meta.digest}"
        if self.compressed_size is not None and meta.compressed_size != self.compressed_size:
            return f"it indexes a blob of {meta.compressed_size} bytes, not {self.compressed_size}"
        if meta.built_from != self.built_from:
            return f"it was built from {meta.built_from!r}, not {self.built_from!r}"
        return None
