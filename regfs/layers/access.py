"""``user.regfs.access``: how a layer is read, or would be, in words.

Layers layer: pure, no IO. The store gathers the facts (the index it reads the layer
through, if any; what the cache holds; what the image's annotations say) without fetching
anything; these functions word them.
"""

from __future__ import annotations

from regfs.domain import mediatypes
from regfs.domain.errors import MalformedContent
from regfs.layers.formats.toc import ESTARGZ, toc_reference
from regfs.layers.index.meta import IndexKind, IndexMeta
from regfs.layers.layer_ref import LayerRef


def current_access(
    meta: IndexMeta, *, soci_source: str, disagreement: str | None, fallback: str | None
) -> str:
    """How a layer read through an index of ``meta`` is read, and why not lazily if it
    could have been (its TOC disagreed with its tar, or a TOC or zTOC could not be used)."""
    if meta.kind is IndexKind.TOC:
        return f"{format_name(meta.compression)} TOC: chunks fetched as read"
    if meta.kind is IndexKind.SOCI:
        return f"{soci_source}: spans fetched as read"
    how = f"whole layer ({meta.compression}): fetched once, checked, indexed"
    if disagreement is not None:
        return f"{how}; its TOC disagrees with its tar, which is shown: {disagreement}"
    return f"{how}; {fallback}" if fallback else how


def planned_access(
    layer: LayerRef, *, whole_cached: bool, disagreement: str | None, soci_v1: bool
) -> str:
    """How a layer not read yet would be: from the cache and the image's annotations."""
    media_type = layer.descriptor.media_type
    if not mediatypes.is_tar_layer(media_type):
        return f"never: {not_a_tar(media_type)}"
    if whole_cached:
        return "whole layer: its index is in the cache"
    if disagreement is not None:
        return f"whole layer: its TOC disagrees with its tar: {disagreement}"
    try:
        reference = toc_reference(dict(layer.descriptor.annotations))
    except MalformedContent as error:
        return f"whole layer: its TOC annotations cannot be used: {error}"
    if reference is not None:
        return f"{format_name(reference.format)} TOC: chunks fetched as read"
    if layer.soci_index is not None and media_type.endswith("gzip"):
        return f"SOCI v2 index {layer.soci_index} named by the image: spans fetched as " \
               "read, if it has this layer's zTOC"  # fmt: skip
    if soci_v1 and media_type.endswith("gzip"):
        return "whole layer, unless a SOCI v1 index among the image's referrers (allowed " \
               "by --soci-v1-referrers) has this layer's zTOC"  # fmt: skip
    return f"whole layer ({media_type}): fetched once, checked, indexed"


def not_a_tar(media_type: str) -> str:
    """Why a layer of ``media_type`` is not read (``mediatypes.is_tar_layer``)."""
    return f"{media_type} is not a tar layer: it has no files to show"


def format_name(toc_format: str) -> str:
    return "eStargz" if toc_format == ESTARGZ else toc_format
