"""A layer laid out in memory before its index is written (``index/laid_out.py``) answers
a reader's questions as the written index does, and is told to the builder's caller only
once it is sure: before the tree when the tree cannot fail, never when the build fails."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.layers.formats import entries as entries_module
from regfs.layers.formats.entries import LayerTreeBuilder
from regfs.layers.formats.tar import TarMember
from regfs.layers.formats.toc import ESTARGZ, TocChunk, TocReference, toc_offset
from regfs.layers.index import build
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import SOCI_COMPRESSION, IndexMeta
from regfs.layers.index.write import write_index
from tests.support.estargz_writer import estargz

META = IndexMeta("sha256:" + "0" * 64, SOCI_COMPRESSION, 1 << 20, 1 << 20, 0)


@st.composite
def laid_out_pieces(draw: st.DrawFn) -> tuple[list[TocChunk], list[tuple[int, int, bytes]]]:
    """Pieces in stream order, some with a gap before them (a TOC's empty files have no
    chunk; a stream need not begin at 0)."""
    chunks = []
    position = draw(st.integers(0, 3))
    for number in range(draw(st.integers(0, 12))):
        position += draw(st.sampled_from([0, 0, 0, 5]))
        size = draw(st.integers(1, 9))
        chunks.append(TocChunk(position, size, number * 4, number * 4 + 4, bytes([number]) * 32))
        position += size
    starts = [(chunk.virtual_offset, number % 8, bytes([number]) * 10)
              for number, chunk in enumerate(chunks)]  # fmt: skip
    return chunks, starts


@settings(max_examples=60, deadline=None)
@given(laid_out_pieces(), st.lists(st.tuples(st.integers(0, 130), st.integers(0, 130)),
                                   max_size=12))  # fmt: skip
def test_a_laid_out_index_answers_as_the_written_one(
    pieces: tuple[list[TocChunk], list[tuple[int, int, bytes]]], ranges: list[tuple[int, int]]
) -> None:
    chunks, starts = pieces
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "index"
        write_index(path, meta=META, entries=(), chunk_hashes=(), checkpoints=(),
                    toc_chunks=chunks, span_starts=starts)  # fmt: skip
        written = LayerIndex.open(path)
        assert written is not None
        try:
            laid_out = LaidOutIndex(path, META, chunks, starts)
            for start, end in ranges:
                assert laid_out.toc_chunks_between(start, end) == written.toc_chunks_between(
                    start, end
                )
            for chunk in chunks:
                offset = chunk.virtual_offset
                assert laid_out.span_start(offset) == written.span_start(offset)
        finally:
            written.close()


def toc_of(files: list[tuple[str, bytes]]) -> tuple[bytes, TocReference, int, int]:
    """An eStargz layer's TOC bytes, their reference, where they start, and the blob's
    size."""
    blob, toc = estargz(files, 1000)
    start, footer_size = toc_offset(blob[-51:], len(blob))
    reference = TocReference(ESTARGZ, Digest.of(toc))
    return blob[start : len(blob) - footer_size], reference, start, len(blob)


def test_the_layout_is_told_before_the_index_is_written(tmp_path: Path) -> None:
    """Told before the SQLite file exists, with what the index then holds: first its
    pieces, then its entries too."""
    files = [("a", os.urandom(2500)), ("b/c", os.urandom(10)), ("b/d", os.urandom(5))]
    toc, reference, start, size = toc_of(files)
    told: list[LaidOutIndex] = []

    def before_writing(laid_out: LaidOutIndex) -> None:
        assert not (tmp_path / "index").exists()
        told.append(laid_out)

    build.build_toc_index(toc, tmp_path / "index", reference=reference, toc_start=start,
                          digest="sha256:" + "1" * 64, size=size, built_from="test",
                          before_writing=before_writing)  # fmt: skip
    written = LayerIndex.open(tmp_path / "index")
    assert written is not None
    try:
        pieces, tree = told
        assert not pieces.has_entries and tree.has_entries
        for laid_out in told:
            assert laid_out.path == tmp_path / "index"
            assert laid_out.meta == written.meta
            assert laid_out.chunks() == written.toc_chunks_in()
            assert laid_out.pieces() == written.pieces_in()
            assert laid_out.stored_pieces() == written.stored_pieces_in()
        assert tree.entries() == written.entries_in()
        for entry in written.entries_in():
            assert tree.entry(entry.id) == entry
            assert tree.child(entry.parent, entry.name) == entry
            assert tree.children(entry.id) == [e for e in written.entries_in()
                                               if e.parent == entry.id]  # fmt: skip
            assert tree.names_of(entry.inode_id) == written.names_of(entry.inode_id)
        assert tree.child(1, b"missing") is None
        with pytest.raises(KeyError):
            tree.entry(len(written.entries_in()) + 1)
    finally:
        written.close()


@pytest.mark.parametrize("limit", [1, 3])
def test_a_tree_that_may_fail_is_made_before_the_layout_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """With more members than a tree takes, the tree is made first: a layer that cannot be
    indexed has no size or pieces told for it (it is read whole instead)."""
    monkeypatch.setattr(entries_module, "MAX_MEMBERS", limit)
    monkeypatch.setattr(build, "MAX_MEMBERS", limit)
    toc, reference, start, size = toc_of([("a", b"1"), ("b", b"2"), ("c", b"3")])
    told: list[LaidOutIndex] = []

    def index() -> None:
        build.build_toc_index(toc, tmp_path / "index", reference=reference, toc_start=start,
                              digest="sha256:" + "1" * 64, size=size, built_from="test",
                              before_writing=told.append)  # fmt: skip

    if limit < 3:
        with pytest.raises(MalformedContent, match="more than"):
            index()
        assert not told
    else:
        index()
        assert [laid_out.has_entries for laid_out in told] == [False, True]


def test_hard_links_are_named_as_the_written_index_names_them(tmp_path: Path) -> None:
    """A file with two more names (one in another directory): every name of its inode,
    in id order, from memory as from the file."""
    tree = LayerTreeBuilder()
    for path, kind, link in ((b"a", b"0", b""), (b"b", b"1", b"a"), (b"c/", b"5", b""),
                             (b"c/d", b"1", b"a"), (b"e", b"0", b"")):  # fmt: skip
        tree.add(TarMember(path, kind[0], 0o644, 0, 0, 0 if link else 3, 0, link, 0, 0, 0))
    entries = list(tree.entries())
    write_index(tmp_path / "index", meta=META, entries=entries, chunk_hashes=(),
                checkpoints=())  # fmt: skip
    written = LayerIndex.open(tmp_path / "index")
    assert written is not None
    try:
        laid_out = LaidOutIndex(tmp_path / "index", META, []).with_entries(entries)
        assert any(entry.link for entry in entries)
        for entry in entries:
            assert laid_out.names_of(entry.inode_id) == written.names_of(entry.inode_id)
            assert laid_out.names_of(entry.id) == written.names_of(entry.id)
    finally:
        written.close()
