"""A layer's index file that a later mount finds damaged, or written by an older regfs:
deleted and built again, never the layer EIO in every mount after (found by a review),
nor a changed row used (its seal)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import pytest
import trio

from regfs.layers.index.seal import TRAILER_SIZE
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel, readdir_reply
from tests.support.memory_registry import MemoryRegistry

MOTD = b"hello from the cache\n"
LAYER = gzip_layer(directory("etc/"), member("etc/motd", MOTD))


@pytest.fixture(autouse=True)
def kernel_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)


def overwritten(index: Path) -> None:
    index.write_bytes(b"not a database" * 1000)


def of_an_older_schema(index: Path) -> None:
    with sqlite3.connect(index) as database:
        database.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    database.close()


def a_directory(index: Path) -> None:
    index.unlink()
    index.mkdir()


def cut_within_a_page(index: Path) -> None:
    data = index.read_bytes()
    index.write_bytes(data[: len(data) - 1000])


def a_row_changed(index: Path) -> None:
    """The byte before the seal: the last page's last cell, a row that still parses."""
    data = bytearray(index.read_bytes())
    data[len(data) - TRAILER_SIZE - 1] ^= 0x01
    index.write_bytes(data)


@pytest.mark.parametrize("damage", [overwritten, of_an_older_schema, a_directory,
                                    cut_within_a_page, a_row_changed])  # fmt: skip
async def test_a_damaged_or_older_index_is_built_again(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None],
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "regfs")
    image = registry.push("app", "1", [LAYER]).replace(":", "-")
    motd = f"{HOST}/app/{image}/rootfs/etc/motd"
    first = Kernel(registry, tmp_path)
    try:
        assert await first.read(motd) == MOTD
    finally:
        first.close()
    (index,) = (path for path in (tmp_path / "indexes").iterdir() if path.suffix == ".sqlite")
    damage(index)
    second = Kernel(registry, tmp_path)
    try:
        assert await second.read(motd) == MOTD
    finally:
        second.close()
    assert "deleted, built again" in caplog.text
    assert index.is_file()
