"""The files nearly every Linux container's start reads, and finding them in one layer.

Formats layer: pure (the layer's entries come through ``EntryTree``). A layer store's
client (podman, CRI-O) reads, before the command's own files, the image's
``/etc/passwd`` and ``/etc/group`` (to set the user up); then the dynamic loader of a
glibc or musl binary reads ``/etc/ld.so.cache`` and maps ``libc.so.6``. A cold start
waits for each of those in turn, one round trip after another; fetched together as soon
as the layer is indexed, they are in the cache when asked for. The paths are those of
Debian/Ubuntu (multiarch, with or without merged ``/usr``), Fedora/RHEL (``lib64``) and
Alpine (musl); a layer lacking one simply has nothing to fetch for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from regfs.layers.formats.entries import EntryKind, IndexEntry

MAX_SYMLINKS = 8
"""Symlinks followed while finding one file (Linux allows 40; these chains have 1 or 2)."""

_MACHINES = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2", "x86_64"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1", "aarch64"),
    "arm": ("arm-linux-gnueabihf", "ld-linux-armhf.so.3", "armhf"),
    "386": ("i386-linux-gnu", "ld-linux.so.2", "x86"),
    "ppc64le": ("powerpc64le-linux-gnu", "ld64.so.2", "ppc64le"),
    "s390x": ("s390x-linux-gnu", "ld64.so.1", "s390x"),
    "riscv64": ("riscv64-linux-gnu", "ld-linux-riscv64-lp64d.so.1", "riscv64"),
}
"""Per OCI architecture: glibc's multiarch directory, its loader's name, musl's arch name."""


def start_files(architecture: str) -> tuple[bytes, ...]:
    """Paths, relative to the image's root, that a container's start reads on
    ``architecture`` (an OCI name such as ``amd64``); the same file may appear under
    more than one path (``lib`` is a link to ``usr/lib`` where ``/usr`` is merged)."""
    paths = [b"etc/passwd", b"etc/group", b"etc/ld.so.cache"]
    machine = _MACHINES.get(architecture)
    if machine is not None:
        multiarch, loader, musl = machine
        directories = ("lib/" + multiarch, "usr/lib/" + multiarch, "lib64", "usr/lib64")
        paths += [f"{lib}/{name}".encode() for lib in directories for name in (loader, "libc.so.6")]
        paths.append(f"lib/ld-musl-{musl}.so.1".encode())
    return tuple(paths)


class EntryTree(Protocol):
    """The entries of one layer's index, as ``LayerIndex`` answers for them."""

    def root(self) -> IndexEntry: ...

    def child(self, parent: int, name: bytes) -> IndexEntry | None: ...

    def entry(self, entry_id: int) -> IndexEntry: ...


def find_file(tree: EntryTree, path: bytes) -> IndexEntry | None:
    """The regular file at ``path`` in this layer alone, following the symlinks on the
    way as long as they lead to entries of the same layer; None if there is none. For a
    hard link, the entry holding the data (its first name)."""
    root = tree.root()
    directories = [root]
    pending = _components(path)
    links_left = MAX_SYMLINKS
    while pending:
        name = pending.pop(0)
        if name == b"..":
            if len(directories) > 1:
                directories.pop()
            continue
        entry = tree.child(directories[-1].id, name)
        if entry is None:
            return None
        if entry.link:
            entry = tree.entry(entry.link)
        if entry.kind is EntryKind.SYMLINK:
            links_left -= 1
            if links_left < 0:
                return None
            if entry.target.startswith(b"/"):
                directories = [root]
            pending = _components(entry.target) + pending
        elif entry.kind is EntryKind.DIRECTORY:
            directories.append(entry)
        elif entry.kind is EntryKind.FILE and not pending:
            return entry
        else:
            return None
    return None


def _components(path: bytes) -> list[bytes]:
    return [part for part in path.split(b"/") if part and part != b"."]


def files_in(tree: EntryTree, paths: Sequence[bytes]) -> list[IndexEntry]:
    """The distinct regular files of this layer found at ``paths``, in the order given."""
    found: dict[int, IndexEntry] = {}
    for path in paths:
        entry = find_file(tree, path)
        if entry is not None and entry.size > 0:
            found.setdefault(entry.id, entry)
    return list(found.values())


def claimed_by(tree: EntryTree, paths: Sequence[bytes]) -> tuple[list[bytes], tuple[bytes, ...]]:
    """Of ``paths``, those at which this layer holds a regular file (``find_file``), and
    the others, for the layers below: asked from the top layer down, each path is
    fetched from the topmost layer holding it, the one the merged tree shows it from."""
    claimed: list[bytes] = []
    rest: list[bytes] = []
    for path in paths:
        (claimed if find_file(tree, path) is not None else rest).append(path)
    return claimed, tuple(rest)
