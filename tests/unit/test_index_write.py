"""Writing a layer index: every entry and TOC chunk goes in, whether their count fills the
multi-row INSERT statements exactly, leaves some over, or does not fill one."""

from __future__ import annotations

from pathlib import Path

import pytest

from regfs.layers.formats.entries import LayerTreeBuilder
from regfs.layers.formats.tar import TarMember
from regfs.layers.formats.toc import TocChunk
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexMeta
from regfs.layers.index.write import ROWS_AT_ONCE, write_index


def file_member(number: int) -> TarMember:
    return TarMember(f"dir/f{number:05}".encode(), ord("0"), 0o644, 0, 0, 10, 0, b"", 0, 0,
                     number * 10)  # fmt: skip


@pytest.mark.parametrize(
    "files", [0, 1, ROWS_AT_ONCE - 2, ROWS_AT_ONCE - 1, 2 * ROWS_AT_ONCE, 3 * ROWS_AT_ONCE + 5]
)
def test_every_row_is_written(tmp_path: Path, files: int) -> None:
    tree = LayerTreeBuilder()
    for number in range(files):
        tree.add(file_member(number))
    entries = list(tree.entries())  # the root and dir/ besides the files
    chunks = [TocChunk(n * 10, 10, n * 7, n * 7 + 7, bytes([n % 256]) * 32) for n in range(files)]
    meta = IndexMeta("sha256:" + "0" * 64, "estargz", 7 * files, 10 * files, 0)
    write_index(tmp_path / "index", meta=meta, entries=entries, chunk_hashes=(), checkpoints=(),
                toc_chunks=chunks)  # fmt: skip
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None
    try:
        assert index.entries_in() == entries
        assert index.toc_chunks_in() == chunks
    finally:
        index.close()


def test_what_sqlite_refuses_is_an_os_error_and_leaves_no_file(tmp_path: Path) -> None:
    """SQLite's failures (a full disk is its "database or disk is full"; here two names
    alike in one directory) are raised as a failed write of any other file is."""
    tree = LayerTreeBuilder()
    tree.add(file_member(1))
    entries = list(tree.entries())
    meta = IndexMeta("sha256:" + "0" * 64, "estargz", 7, 10, 0)
    with pytest.raises(OSError, match="not written"):
        write_index(tmp_path / "index", meta=meta, entries=[*entries, entries[-1]],
                    chunk_hashes=(), checkpoints=())  # fmt: skip
    assert list(tmp_path.iterdir()) == []
