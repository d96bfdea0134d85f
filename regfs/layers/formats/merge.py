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
    merging = TopDown()
    for layer, entry in candidates:
        if not merging.offer(layer, entry):
            break
    return merging.result()


class TopDown:
    """``resolve``, one candidate at a time (top layer first), for a caller that fetches
    a lower layer only when the answer may still depend on it."""

    def __init__(self) -> None:
        self.directories: list[tuple[int, IndexEntry]] = []
        """The directories contributing so far, top first."""
        self._file: Resolved | None = None

    def offer(self, layer: int, entry: IndexEntry | None) -> bool:
        """Take the next layer's entry for the name; False once no lower layer can change
        the answer."""
        if entry is None:
            return True
        if entry.kind is EntryKind.WHITEOUT:
            return False
        if entry.kind is not EntryKind.DIRECTORY:
            if not self.directories:  # else: a file below a directory is hidden by it
                self._file = Resolved(layer, entry)
            return False
        self.directories.append((layer, entry))
        return not entry.opaque

    def result(self) -> Resolved | None:
        if self._file is not None:
            return self._file
        if not self.directories:
            return None
        layer, entry = next(
            (pair for pair in self.directories if not pair[1].implicit), self.directories[0]
        )
        return Resolved(layer, entry, tuple(self.directories))
