"""Inode numbers for nodes, with the kernel's lookup counts.

Tree layer: pure bookkeeping. A node gets an inode on first use and keeps it while the
kernel holds a reference (lookup count > 0); ``forget`` releases it. Equal node keys map
to one inode, so a path looked up twice is one file to the kernel. A hard-linked file's
number outlives the kernel's reference (up to ``KEPT_NUMBERS`` of them): the kernel
forgets inodes under memory pressure, mid-walk, and tools match hard links by number.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import cachetools

from regfs.domain.errors import NotFound
from regfs.tree.node import Node

ROOT_INODE = 1
KEPT_NUMBERS = 65536
"""Hard-linked files whose inode numbers are kept once forgotten (a key and a number
each: a few MB at most; an image rarely has more than hundreds)."""


@dataclass(slots=True)
class _Entry:
    node: Node
    lookups: int
    parent: int = ROOT_INODE
    """The directory the kernel last found it in: a directory's ``..`` (it has one path)."""


class InodeTable:
    def __init__(self, root: Node) -> None:
        self._entries: dict[int, _Entry] = {ROOT_INODE: _Entry(root, 1)}
        self._by_key: dict[Hashable, int] = {root.key: ROOT_INODE}
        self._next = ROOT_INODE + 1
        self._kept: cachetools.LRUCache[Hashable, int] = cachetools.LRUCache(KEPT_NUMBERS)
        """Numbers of hard-linked files the kernel forgot, for when it looks them up again
        (a number is never given to another key, so reusing it is safe)."""

    def inode_of(self, node: Node) -> int:
        """The inode for ``node``'s key, assigned now if it has none (lookup count 0)."""
        inode = self._by_key.get(node.key)
        if inode is None:
            inode = self._kept.pop(node.key, None)
            if inode is None:
                inode = self._next
                self._next += 1
            self._entries[inode] = _Entry(node, 0)
            self._by_key[node.key] = inode
        return inode

    def remember(self, node: Node, parent: int) -> int:
        """``inode_of`` plus one kernel reference: call once per entry handed to the kernel,
        found in directory ``parent``."""
        inode = self.inode_of(node)
        entry = self._entries[inode]
        entry.lookups += 1
        entry.parent = parent
        return inode

    def parent_of(self, inode: int) -> int:
        """The inode of the directory ``inode`` was last found in (the root's is itself)."""
        entry = self._entries.get(inode)
        return ROOT_INODE if entry is None else entry.parent

    def node(self, inode: int) -> Node:
        entry = self._entries.get(inode)
        if entry is None:
            raise NotFound(f"inode {inode} is not known (forgotten or stale)")
        return entry.node

    def forget(self, inode: int, count: int) -> None:
        entry = self._entries.get(inode)
        if entry is None or inode == ROOT_INODE:
            return
        entry.lookups -= count
        if entry.lookups <= 0:
            self.drop_if_unused(inode)

    def drop_if_unused(self, inode: int) -> None:
        """Release an inode the kernel holds no reference to (e.g. a refused readdir entry)."""
        entry = self._entries.get(inode)
        if entry is not None and entry.lookups <= 0 and inode != ROOT_INODE:
            del self._entries[inode]
            del self._by_key[entry.node.key]
            if entry.node.hard_linked:
                self._kept[entry.node.key] = inode

    def __len__(self) -> int:
        return len(self._entries)
