from __future__ import annotations

import pytest

from regfs.domain.errors import NotFound
from regfs.tree.inodes import ROOT_INODE, InodeTable
from regfs.tree.node import Node


class Named(Node):
    def __init__(self, key: str) -> None:
        self.key = key


def test_equal_keys_share_an_inode_until_forgotten() -> None:
    table = InodeTable(Named("root"))
    first = table.remember(Named("a"))
    assert table.remember(Named("a")) == first
    assert table.inode_of(Named("b")) != first
    table.forget(first, 1)
    assert table.node(first).key == "a"  # one reference is left
    table.forget(first, 1)
    with pytest.raises(NotFound):
        table.node(first)
    assert table.remember(Named("a")) != first  # a new inode, never reused


def test_root_is_never_forgotten_and_unused_entries_can_be_dropped() -> None:
    table = InodeTable(Named("root"))
    table.forget(ROOT_INODE, 10)
    assert table.node(ROOT_INODE).key == "root"
    unused = table.inode_of(Named("x"))
    table.drop_if_unused(unused)
    assert len(table) == 1
