"""The seal of a layer index file: any byte of a sealed file changed, the file cut or grown,
and it is refused; a file of its pages alone (an older regfs's) is used unchecked. A
closed index opens again only onto the file first checked, or one of the same pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regfs.domain.errors import Evicted, Unavailable
from regfs.layers.formats.entries import LayerTreeBuilder
from regfs.layers.formats.tar import TarMember
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexMeta
from regfs.layers.index.seal import TRAILER_SIZE, BrokenSeal, check_seal
from regfs.layers.index.write import write_index


def written(path: Path, files: int = 50) -> int:
    """Write a small index at ``path``; the size of its pages."""
    tree = LayerTreeBuilder()
    for number in range(files):
        tree.add(TarMember(f"dir/f{number:03}".encode(), ord("0"), 0o644, 0, 0, 10, 0, b"",
                           0, 0, number * 512))  # fmt: skip
    meta = IndexMeta("sha256:" + "0" * 64, "gzip", 700, 50 * 512, 1 << 20)
    write_index(path, meta=meta, entries=tree.entries(), chunk_hashes=[b"\0" * 32],
                checkpoints=[(0, 0)])  # fmt: skip
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as database:
        (page_size,) = database.execute("PRAGMA page_size").fetchone()
        (pages,) = database.execute("PRAGMA page_count").fetchone()
    database.close()
    return int(page_size * pages)


def test_a_written_index_is_sealed_and_opens(tmp_path: Path) -> None:
    pages = written(tmp_path / "index")
    assert (tmp_path / "index").stat().st_size == pages + TRAILER_SIZE
    assert check_seal(tmp_path / "index", pages) is not None
    index = LayerIndex.open(tmp_path / "index")
    assert index is not None
    index.close()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_byte_changed_breaks_the_seal(tmp_path: Path, position: float, flip: int) -> None:
    path = tmp_path / "index"
    pages = written(path)
    data = bytearray(path.read_bytes())
    data[int(position * len(data))] ^= flip
    path.write_bytes(data)
    with pytest.raises(BrokenSeal):
        check_seal(path, pages)


@pytest.mark.parametrize("cut", [1, TRAILER_SIZE - 1, TRAILER_SIZE + 1, 4096])
def test_a_file_cut_or_grown_breaks_the_seal(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "index"
    pages = written(path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with pytest.raises(BrokenSeal):
        check_seal(path, pages)
    path.write_bytes(data + b"\0")
    with pytest.raises(BrokenSeal):
        check_seal(path, pages)


def test_an_unsealed_file_of_its_pages_alone_is_an_older_regfs_s(tmp_path: Path) -> None:
    path = tmp_path / "index"
    pages = written(path)
    path.write_bytes(path.read_bytes()[:pages])
    assert check_seal(path, pages) is None
    index = LayerIndex.open(path)
    assert index is not None
    index.close()


def test_a_closed_index_opens_again_only_onto_its_own_file_or_its_twin(tmp_path: Path) -> None:
    """A mount closes indexes past ``OPEN_INDEXES`` and opens them again by path. Another
    process may have evicted the file and built it again since: the same pages (built
    from the same input) serve; other pages number their entries their own way."""
    path = tmp_path / "index"
    written(path)
    index = LayerIndex.open(path)
    assert index is not None
    entries = index.entries_in()
    index.close()
    assert index.entries_in() == entries  # the same file: opened again
    index.close()
    written(tmp_path / "twin")
    (tmp_path / "twin").replace(path)  # evicted, built again alike
    assert index.entries_in() == entries
    index.close()
    written(tmp_path / "other", files=49)
    (tmp_path / "other").replace(path)
    with pytest.raises(Unavailable, match="built it anew"):
        index.entries_in()
    path.unlink()
    with pytest.raises(Evicted, match="evicted by another process"):
        index.entries_in()
