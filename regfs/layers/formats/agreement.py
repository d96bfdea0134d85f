"""Does a lazy layer's TOC say what its tar says?

Layers layer: pure, no IO. An eStargz or zstd:chunked layer carries its files twice: the
tar stream, which the layer digest vouches for and which ``docker pull`` unpacks, and the
TOC, which lazy readers show. They can differ (a setuid bit, an owner, a file only one of
them has: containers/storage#2014). Given both indexes of a layer, this module lists
where they differ (names, kinds, modes, owners, sizes, link targets, xattrs, device
numbers, opaque dirs) and which byte ranges of the tar must hash to each TOC chunk's digest
for the contents to agree; the caller reads and hashes those.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from regfs.layers.formats.entries import ROOT_ID, EntryKind, IndexEntry
from regfs.layers.formats.toc import HIDDEN_NAMES, TocChunk

SHOWN_DIFFERENCES = 10
"""Differences named in a verdict: enough to see what is wrong, bounded for a log line."""


@dataclass(frozen=True, slots=True)
class LayerTree:
    """A layer index's entries by path (the root is ``b""``), and each id's path."""

    by_path: dict[bytes, IndexEntry]
    path_of: dict[int, bytes]

    @classmethod
    def of(cls, entries: Iterable[IndexEntry]) -> LayerTree:
        """From entries in id order (parents before children, as indexes number them)."""
        by_path: dict[bytes, IndexEntry] = {}
        path_of: dict[int, bytes] = {}
        for entry in entries:
            if entry.id == ROOT_ID:
                path = b""
            else:
                parent = path_of.get(entry.parent)
                if parent is None:
                    continue  # below a missing parent: not part of the tree
                path = f"{os.fsdecode(parent)}/{os.fsdecode(entry.name)}".lstrip("/").encode(
                    "utf-8", "surrogateescape"
                )
            path_of[entry.id] = path
            by_path[path] = entry
        return cls(by_path, path_of)


@dataclass(frozen=True, slots=True)
class ContentCheck:
    """``size`` bytes of the tar stream at ``offset`` must hash to ``sha256`` (a TOC
    chunk of the file at ``path``)."""

    path: bytes
    offset: int
    size: int
    sha256: bytes


def metadata_differences(toc: LayerTree, tar: LayerTree) -> list[str]:
    """Where the two trees differ, path by path, in path order. The tar's copies of the
    TOC's own files (``stargz.index.json``, landmarks) are not differences."""
    found: list[str] = []
    for path in sorted(toc.by_path.keys() | tar.by_path.keys()):
        if path in HIDDEN_NAMES:
            continue
        in_toc, in_tar = toc.by_path.get(path), tar.by_path.get(path)
        shown = _shown(path)
        if in_toc is None:
            found.append(f"{shown}: only in the tar")
        elif in_tar is None:
            found.append(f"{shown}: only in the TOC")
        else:
            found += [
                f"{shown}: {what}: TOC {toc_value}, tar {tar_value}"
                for what, toc_value, tar_value in _attributes(toc, in_toc, tar, in_tar)
            ]
    return found


def _attributes(
    toc: LayerTree, in_toc: IndexEntry, tar: LayerTree, in_tar: IndexEntry
) -> Iterator[tuple[str, object, object]]:
    """(attribute, TOC's value, tar's value) for each attribute that differs."""
    if in_toc.kind is not in_tar.kind:
        yield "kind", in_toc.kind.name.lower(), in_tar.kind.name.lower()
        return
    if in_toc.implicit or in_tar.implicit:
        return  # a directory made for a child has no attributes of its own
    pairs: list[tuple[str, object, object]] = [
        ("mode", f"{in_toc.mode:04o}", f"{in_tar.mode:04o}"),
        ("owner", f"{in_toc.uid}:{in_toc.gid}", f"{in_tar.uid}:{in_tar.gid}"),
        ("xattrs", sorted(in_toc.xattrs), sorted(in_tar.xattrs)),
        ("hard link to", _link(toc, in_toc), _link(tar, in_tar)),
    ]
    if in_toc.kind is EntryKind.FILE:
        pairs.append(("size", in_toc.size, in_tar.size))
    if in_toc.kind is EntryKind.SYMLINK:
        pairs.append(("target", in_toc.target, in_tar.target))
    if in_toc.kind in (EntryKind.CHAR_DEVICE, EntryKind.BLOCK_DEVICE):
        pairs.append(
            (
                "device",
                (in_toc.rdev_major, in_toc.rdev_minor),
                (in_tar.rdev_major, in_tar.rdev_minor),
            )
        )
    if in_toc.kind is EntryKind.DIRECTORY:
        pairs.append(("opaque", in_toc.opaque, in_tar.opaque))
    yield from (pair for pair in pairs if pair[1] != pair[2])


def _link(tree: LayerTree, entry: IndexEntry) -> str | None:
    """The path of the first name of ``entry``'s inode, if it is a later hard link."""
    return _shown(tree.path_of.get(entry.link, b"?")) if entry.link else None


def content_checks(
    toc: LayerTree, chunks: Iterable[TocChunk], tar: LayerTree
) -> list[ContentCheck]:
    """For each TOC chunk of a file both trees have at the same size: where its bytes lie
    in the tar stream. (Files that differ in kind or size are differences already.)"""
    files = sorted(
        (entry.data_offset, entry.size, path)
        for path, entry in toc.by_path.items()
        if entry.kind is EntryKind.FILE and not entry.link and entry.size
    )
    starts = [start for start, _, _ in files]
    checks = []
    for chunk in chunks:
        position = bisect.bisect_right(starts, chunk.virtual_offset) - 1
        if position < 0:
            continue
        start, size, path = files[position]
        in_tar = tar.by_path.get(path)
        inside = chunk.virtual_offset + chunk.size <= start + size
        if in_tar is None or in_tar.kind is not EntryKind.FILE or in_tar.size != size or not inside:
            continue
        offset = in_tar.data_offset + chunk.virtual_offset - start
        checks.append(ContentCheck(path, offset, chunk.size, chunk.sha256))
    return checks


def compare(
    toc_entries: Iterable[IndexEntry], chunks: Iterable[TocChunk], tar_entries: Iterable[IndexEntry]
) -> tuple[list[str], list[ContentCheck]]:
    """The metadata differences between a layer's TOC index and its tar index, and the
    content checks that remain to be made (by a caller that can read the tar)."""
    toc, tar = LayerTree.of(toc_entries), LayerTree.of(tar_entries)
    return metadata_differences(toc, tar), content_checks(toc, chunks, tar)


def content_difference(check: ContentCheck) -> str:
    return f"{_shown(check.path)}: content at tar offset {check.offset} is not the TOC's"


def verdict(differences: list[str]) -> str:
    """The first differences, for a log line and ``user.regfs.access``."""
    shown = "; ".join(differences[:SHOWN_DIFFERENCES])
    more = len(differences) - SHOWN_DIFFERENCES
    return f"{shown}; and {more} more" if more > 0 else shown


def _shown(path: bytes) -> str:
    return "/" + os.fsdecode(path)
