from __future__ import annotations

import pytest

from regfs.domain.errors import NotFound
from regfs.tree.inodes import ROOT_INODE, InodeTable
from regfs.tree.node import Node


class Named(Node):
    def __init__(self, key: str, *, hard_linked: bool = False) -> None:
        self.key = key
        self.hard_linked = hard_linked


def test_equal_keys_share_an_inode_until_forgotten() -> None:
    table = InodeTable(Named("root"))
    first = table.remember(Named("a"), ROOT_INODE)
    assert table.remember(Named("a"), ROOT_INODE) == first
    assert table.inode_of(Named("b")) != first
    table.forget(first, 1)
    assert table.node(first).key == "a"  # one reference is left
    table.forget(first, 1)
    with pytest.raises(NotFound):
        table.node(first)
    assert table.remember(Named("a"), ROOT_INODE) != first  # a new inode, never reused


def test_root_is_never_forgotten_and_unused_entries_can_be_dropped() -> None:
    table = InodeTable(Named("root"))
    table.forget(ROOT_INODE, 10)
    assert table.node(ROOT_INODE).key == "root"
    unused = table.inode_of(Named("x"))
    table.drop_if_unused(unused)
    assert len(table) == 1


def test_a_hard_linked_file_keeps_its_number_once_forgotten() -> None:
    """The kernel forgets inodes under memory pressure, mid-walk: ``tar``, ``du`` and
    ``rsync -H`` meeting another name of a hard-linked file later must see the number they
    saw first, or they store, count or copy it twice."""
    table = InodeTable(Named("root"))
    linked = table.remember(Named("inode 7", hard_linked=True), ROOT_INODE)
    table.remember(Named("other"), ROOT_INODE)
    table.forget(linked, 1)
    with pytest.raises(NotFound):
        table.node(linked)
    assert table.remember(Named("inode 7", hard_linked=True), ROOT_INODE) == linked
    assert table.remember(Named("new"), ROOT_INODE) not in (linked, ROOT_INODE)
