"""OCI whiteout semantics: which layer's entry a merged (``rootfs/``) path shows.

Layers layer: pure, no IO. The merged tree is resolved one name at a time, top layer
first, among the layers that contribute to the parent directory:

- a whiteout hides the name in every lower layer;
- a non-directory in the highest layer that has the name wins outright, and hides lower
  directories of that name (a directory replaced by a file);
- directories merge: each layer's directory of that name contributes its children, down
  to the first that is opaque (``.wh..wh..opq``) or is hidden by a whiteout or a file.

The merged directory takes its attributes from the highest layer that lists it
explicitly (an implicit parent made for a child does not override a real one below).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from regfs.layers.formats.entries import EntryKind, IndexEntry


@dataclass(frozen=True, slots=True)
class Resolved:
    layer: int
    """Position (0 = bottom) of the layer whose entry gives the attributes."""
    entry: IndexEntry
    directories: tuple[tuple[int, IndexEntry], ...] = ()
    """For a directory: every contributing (layer, entry), top first."""

    @property
    def is_directory(self) -> bool:
        return bool(self.directories)


def resolve(candidates: Iterable[tuple[int, IndexEntry | None]]) -> Resolved | None:
    """The merged entry for one name, from (layer, entry or None) pairs, top layer first."""
    directories: list[tuple[int, IndexEntry]] = []
    for layer, entry in candidates:
        if entry is None:
            continue
        if entry.kind is EntryKind.WHITEOUT:
            break
        if entry.kind is not EntryKind.DIRECTORY:
            if directories:
                break  # a file below a directory is hidden by it
            return Resolved(layer, entry)
        directories.append((layer, entry))
        if entry.opaque:
            break
    if not directories:
        return None
    layer, entry = next((pair for pair in directories if not pair[1].implicit), directories[0])
    return Resolved(layer, entry, tuple(directories))
