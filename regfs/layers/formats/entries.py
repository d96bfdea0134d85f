"""What a layer index holds per entry, and the tar → tree rules that produce it.

Layers layer: pure, no IO. ``LayerTreeBuilder`` turns tar members (in archive order) into
the tree a layer dir shows:

- paths are normalised (``./a//b`` → ``a/b``); ``..`` is resolved lexically and a path
  that would leave the layer root is skipped;
- parents missing from the archive are created as *implicit* directories; a member below
  a non-directory is skipped, as ``tar -x`` and umoci do;
- a later member replaces an earlier one at the same path (a directory over a directory
  only updates its attributes), as ``tar -x`` does;
- ``.wh.NAME`` becomes a whiteout entry ``NAME``; ``.wh..wh..opq`` marks its directory
  opaque. A whiteout hides lower layers only: a name this layer makes before or after
  its whiteout is kept, and a directory of it is opaque (nothing lower shows through), as
  is a directory made over a file or link of its own layer;
- hard links share their target's attributes and data (one inode, counted links); a hard
  link to a missing or directory target is skipped;
- what old Docker's aufs driver kept at a layer's root (``.wh..wh.aufs``,
  ``.wh..wh.orph/``, ``.wh..wh.plnk/``) is not shown, as docker skips it; the regular
  files of ``.wh..wh.plnk/`` stay hard-link targets, for the links that name them.

Skipped members are reported as warnings for the caller to log, not raised: one odd
member must not make the rest of an image unreadable.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.tar import SPARSE, TarMember

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
AUFS_META_PREFIX = b".wh..wh."
AUFS_LINK_DIR = b".wh..wh.plnk"
ROOT_ID = 1
DEFAULT_DIR_MODE = 0o755
MAX_NAME = 255
"""Longest name a Linux filesystem (and a FUSE readdir reply) takes."""
MAX_MEMBERS = 1_000_000
"""Bounds memory while a layer is indexed: the tree takes about 330 bytes a member
(tracemalloc, 100 000 files in 500 dirs), so at most ~330 MB per layer being indexed (a
real image layer has well under a million)."""


class EntryKind(enum.IntEnum):
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    CHAR_DEVICE = 4
    BLOCK_DEVICE = 5
    FIFO = 6
    WHITEOUT = 7
    """Deletes the same name in lower layers; shown as a 0/0 char device in a layer dir."""


_KIND_BY_TYPEFLAG = {
    ord("0"): EntryKind.FILE,
    0: EntryKind.FILE,
    ord("7"): EntryKind.FILE,
    ord("2"): EntryKind.SYMLINK,
    ord("3"): EntryKind.CHAR_DEVICE,
    ord("4"): EntryKind.BLOCK_DEVICE,
    ord("5"): EntryKind.DIRECTORY,
    ord("6"): EntryKind.FIFO,
}


class IndexEntry(NamedTuple):
    """One row of a layer index (see ``schema.sql`` for what each field means). A named
    tuple: one is made per row written or read (a listing of 10 000 names makes 10 000),
    in 1.5 µs where a frozen dataclass took 3.9 µs."""

    id: int
    parent: int
    name: bytes
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    target: bytes = b""
    data_offset: int = 0
    link: int = 0
    """For the second and later names of a hard-linked inode: the id of the first."""
    nlink: int = 1
    rdev_major: int = 0
    rdev_minor: int = 0
    opaque: bool = False
    implicit: bool = False
    xattrs: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def inode_id(self) -> int:
        """The id whose inode this name shares (its own unless it is a later hard link)."""
        return self.link or self.id


@dataclass(slots=True)
class _Inode:
    """Attributes shared by every name of one inode. It counts its names rather than
    holding them: a name holds its inode, and a back-reference would make every node of a
    tree a reference cycle, which only the garbage collector's rarest pass frees (a tree of
    100 000 names outlived its index by 54 MB)."""

    kind: EntryKind
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    target: bytes = b""
    data_offset: int = 0
    rdev: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    names: int = 0


@dataclass(slots=True, eq=False)
class _Node:
    inode: _Inode
    children: dict[bytes, _Node] | None = None  # directories only
    opaque: bool = False
    implicit: bool = False


def normalize_path(path: bytes) -> list[bytes] | None:
    """Path components inside the layer root, or None if ``path`` climbs out of it."""
    split = path.split(b"/")
    if b"" not in split and b"." not in split and b".." not in split:
        return split  # most paths: one split, three scans in C
    parts: list[bytes] = []
    for part in split:
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


def _shown(member: TarMember) -> str:
    """A member's path as a warning shows it."""
    return member.path.decode("utf-8", "backslashreplace")


def _is_whiteout(node: _Node | None) -> bool:
    return node is not None and node.inode.kind is EntryKind.WHITEOUT


def _directory(*, implicit: bool, member: TarMember | None = None) -> _Node:
    if member is None:
        inode = _Inode(EntryKind.DIRECTORY, DEFAULT_DIR_MODE)
    else:
        inode = _inode_of(member, EntryKind.DIRECTORY)
    inode.names = 1
    return _Node(inode, children={}, implicit=implicit)


def _inode_of(member: TarMember, kind: EntryKind) -> _Inode:
    """Positional: one per member (keywords took a third longer)."""
    return _Inode(
        kind, member.mode, member.uid, member.gid,
        member.size if kind is EntryKind.FILE else 0, member.mtime_ns,
        member.linkname if kind is EntryKind.SYMLINK else b"", member.data_offset,
        (member.devmajor, member.devminor), member.xattrs, 0,
    )  # fmt: skip


class LayerTreeBuilder:
    """Collects tar members into a layer tree; ``entries()`` numbers it for the index."""

    def __init__(self) -> None:
        self.root = _directory(implicit=True)
        self.warnings: list[str] = []
        self.members = 0
        self._aufs_links: dict[bytes, _Node] = {}
        """The files of ``.wh..wh.plnk/``: hard-link targets named by no path shown."""

    def add(self, member: TarMember) -> None:
        parts = normalize_path(member.path)
        if parts is None:
            self.warnings.append(f"{_shown(member)!r} climbs out of the layer root: skipped")
            return
        if member.type == SPARSE:
            self.warnings.append(f"{_shown(member)!r} is a GNU sparse file, not supported: skipped")
            return
        if not member.is_supported:
            self.warnings.append(
                f"{_shown(member)!r} has unsupported tar type {chr(member.type)!r}: skipped"
            )
            return
        if not parts:
            if member.type == ord("5"):  # ./: what tar -x gives the dir it extracts into
                self._replace_attributes(self.root, member)
                self.root.implicit = False
            return
        # a part longer than MAX_NAME makes the path longer: most paths need no look at parts
        if len(member.path) > MAX_NAME and any(len(part) > MAX_NAME for part in parts):
            self.warnings.append(
                f"{_shown(member)[:100]!r}… has a name longer than {MAX_NAME} bytes: skipped"
            )
            return
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise MalformedContent(f"layer has more than {MAX_MEMBERS} members")
        if parts[0].startswith(AUFS_META_PREFIX) and parts != [OPAQUE_MARKER]:
            self._aufs_meta(parts, member)
            return
        name = parts[-1]
        parent = self._parent_dir(parts[:-1])
        if parent is None:
            # tar -x fails here ("Not a directory") and umoci skips it; umoci even writes
            # whiteouts below a directory it replaced by a file, and those hide nothing.
            if not name.startswith(WHITEOUT_PREFIX):
                self.warnings.append(f"{_shown(member)!r} lies below a non-directory: skipped")
            return
        self._place(parent, name, member)

    def _place(self, parent: _Node, name: bytes, member: TarMember) -> None:
        assert parent.children is not None
        if name == OPAQUE_MARKER:
            parent.opaque = True
        elif name.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, name[len(WHITEOUT_PREFIX) :], member)
        elif member.type == ord("1"):
            self._hard_link(parent, name, member)
        elif member.type == ord("5"):
            existing = parent.children.get(name)
            if existing is not None and existing.children is not None:
                self._replace_attributes(existing, member)
                existing.implicit = False
            else:
                directory = _directory(implicit=False, member=member)
                # over a non-directory of this layer (a whiteout, a file, a link): what a
                # lower layer had there is gone, as an unpacker removes it (umoci, docker)
                directory.opaque = existing is not None
                self._put(parent, name, directory)
        else:
            inode = _inode_of(member, _KIND_BY_TYPEFLAG[member.type])
            inode.names = 1
            self._put(parent, name, _Node(inode))

    @staticmethod
    def _replace_attributes(node: _Node, member: TarMember) -> None:
        names = node.inode.names
        node.inode = _inode_of(member, EntryKind.DIRECTORY)
        node.inode.names = names

    def _parent_dir(self, parts: list[bytes]) -> _Node | None:
        """The directory at ``parts``, made (implicit) where missing; None below a non-dir."""
        node = self.root
        for part in parts:
            assert node.children is not None
            child = node.children.get(part)
            if child is None or _is_whiteout(child):
                whited_out = child is not None
                child = _directory(implicit=True)
                child.opaque = whited_out  # nothing below this layer's whiteout shows
                self._put(node, part, child)
            elif child.children is None:
                return None
            node = child
        return node

    def _put(self, parent: _Node, name: bytes, node: _Node) -> None:
        assert parent.children is not None
        replaced = parent.children.get(name)
        if replaced is not None:
            _detach(replaced)
        parent.children[name] = node

    def _whiteout(self, parent: _Node, name: bytes, member: TarMember) -> None:
        """A whiteout hides the name in lower layers only (OCI, and umoci): what this layer
        made of the name before it stays; a directory of it now hides lower ones."""
        if not name or name in (b".", b".."):
            self.warnings.append(f"{_shown(member)!r} is a whiteout of nothing: skipped")
            return
        assert parent.children is not None
        existing = parent.children.get(name)
        if existing is not None and not _is_whiteout(existing):
            if existing.children is not None:
                existing.opaque = True
            return  # a non-directory hides lower layers' name by itself
        inode = _inode_of(member, EntryKind.WHITEOUT)
        inode.names = 1
        self._put(parent, name, _Node(inode))

    def _aufs_meta(self, parts: list[bytes], member: TarMember) -> None:
        """Old Docker's aufs metadata at the layer root: not shown (docker skips it), but a
        regular file of ``.wh..wh.plnk/`` is kept, unnamed, for hard links to it."""
        name = _aufs_link_name(parts)
        if name is not None and _KIND_BY_TYPEFLAG.get(member.type) is EntryKind.FILE:
            self._aufs_links[name] = _Node(_inode_of(member, EntryKind.FILE))

    def _link_target(self, parts: list[bytes]) -> _Node | None:
        name = _aufs_link_name(parts)
        return self._find(parts) if name is None else self._aufs_links.get(name)

    def _hard_link(self, parent: _Node, name: bytes, member: TarMember) -> None:
        target_parts = normalize_path(member.linkname)
        target = self._link_target(target_parts) if target_parts else None
        if target is None or target.children is not None or target.inode.kind is EntryKind.WHITEOUT:
            self.warnings.append(
                f"{_shown(member)!r} is a hard link to a missing or unusable target: skipped"
            )
            return
        if parent.children and parent.children.get(name) is target:
            return  # a name linked to itself: tar -x leaves it as it is
        target.inode.names += 1
        self._put(parent, name, _Node(target.inode))

    def _find(self, parts: list[bytes]) -> _Node | None:
        node = self.root
        for part in parts:
            if node.children is None or part not in node.children:
                return None
            node = node.children[part]
        return node

    def entries(self) -> Iterator[IndexEntry]:
        """Every entry, parents before children, the root first with id ``ROOT_ID``.

        Produced one at a time for the index writer: only the tree itself is held, never
        a second copy of it as rows.
        """
        first_id: dict[int, int] = {}  # id(_Inode) → id of its first name, if it has others
        queue: deque[tuple[_Node, int, bytes]] = deque([(self.root, 0, b"")])
        entry_id = 0
        while queue:
            node, parent_id, name = queue.popleft()
            entry_id += 1
            inode = node.inode
            link = entry_id
            if inode.names > 1:
                link = first_id.setdefault(id(inode), entry_id)
            yield IndexEntry(
                entry_id, parent_id, name, inode.kind, inode.mode, inode.uid, inode.gid,
                inode.size, inode.mtime_ns, inode.target, inode.data_offset,
                0 if link == entry_id else link, inode.names, *inode.rdev, node.opaque,
                node.implicit, inode.xattrs,
            )  # fmt: skip
            if node.children:
                queue.extend(
                    (child, entry_id, child_name)
                    for child_name, child in sorted(node.children.items())
                )


def _aufs_link_name(parts: list[bytes]) -> bytes | None:
    """The name of a file right in ``.wh..wh.plnk/`` (aufs's hard-link targets), else None."""
    return parts[1] if len(parts) == 2 and parts[0] == AUFS_LINK_DIR else None


def _detach(node: _Node) -> None:
    """Remove ``node`` (and, for a directory, its subtree) from the hard-link counts."""
    pending = [node]
    while pending:
        current = pending.pop()
        current.inode.names -= 1
        pending.extend((current.children or {}).values())
