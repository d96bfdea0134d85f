"""A lazy layer's TOC against its tar: which differences count, and what is checked."""

from __future__ import annotations

from regfs.layers.formats.agreement import (
    SHOWN_DIFFERENCES,
    LayerTree,
    content_checks,
    metadata_differences,
    verdict,
)
from regfs.layers.formats.entries import ROOT_ID, EntryKind, IndexEntry
from regfs.layers.formats.toc import TocChunk


def entry(
    id: int, parent: int, name: bytes, kind: EntryKind = EntryKind.FILE, **fields: object
) -> IndexEntry:
    values: dict[str, object] = {"mode": 0o644, "uid": 0, "gid": 0, "size": 0, "mtime_ns": 0}
    values.update(fields)
    return IndexEntry(id=id, parent=parent, name=name, kind=kind, **values)  # type: ignore[arg-type]


ROOT = entry(ROOT_ID, 0, b"", EntryKind.DIRECTORY, mode=0o755)


def tree(*entries: IndexEntry) -> LayerTree:
    return LayerTree.of([ROOT, *entries])


def test_paths_follow_parents_and_skip_orphans() -> None:
    layer = tree(
        entry(2, 1, b"usr", EntryKind.DIRECTORY, mode=0o755),
        entry(3, 2, b"bin", EntryKind.DIRECTORY, mode=0o755),
        entry(4, 3, b"sh", size=5),
        entry(5, 99, b"lost"),
    )
    assert sorted(layer.by_path) == [b"", b"usr", b"usr/bin", b"usr/bin/sh"]
    assert layer.path_of[4] == b"usr/bin/sh"


def test_equal_trees_agree_whatever_their_ids() -> None:
    toc = tree(entry(2, 1, b"a", size=3, data_offset=0), entry(3, 1, b"b", size=1))
    tar = tree(entry(7, 1, b"b", size=1), entry(9, 1, b"a", size=3, data_offset=512))
    assert metadata_differences(toc, tar) == []


def test_each_attribute_that_differs_is_named() -> None:
    toc = tree(
        entry(2, 1, b"su", mode=0o4755, size=10),
        entry(3, 1, b"owned", uid=0),
        entry(4, 1, b"link", EntryKind.SYMLINK, target=b"/a"),
        entry(5, 1, b"only-toc"),
        entry(6, 1, b"x", xattrs=((b"user.a", b"1"),)),
        entry(7, 1, b"kind"),
        entry(8, 1, b"d", EntryKind.DIRECTORY, opaque=True),
        entry(9, 1, b"dev", EntryKind.CHAR_DEVICE, rdev_major=1, rdev_minor=3),
    )
    tar = tree(
        entry(2, 1, b"su", mode=0o755, size=11),
        entry(3, 1, b"owned", uid=1000, gid=5),
        entry(4, 1, b"link", EntryKind.SYMLINK, target=b"/b"),
        entry(5, 1, b"only-tar"),
        entry(6, 1, b"x"),
        entry(7, 1, b"kind", EntryKind.DIRECTORY),
        entry(8, 1, b"d", EntryKind.DIRECTORY),
        entry(9, 1, b"dev", EntryKind.CHAR_DEVICE, rdev_major=1, rdev_minor=5),
    )
    found = metadata_differences(toc, tar)
    assert found == [
        "/d: opaque: TOC True, tar False",
        "/dev: device: TOC (1, 3), tar (1, 5)",
        "/kind: kind: TOC file, tar directory",
        "/link: target: TOC b'/a', tar b'/b'",
        "/only-tar: only in the tar",
        "/only-toc: only in the TOC",
        "/owned: owner: TOC 0:0, tar 1000:5",
        "/su: mode: TOC 4755, tar 0755",
        "/su: size: TOC 10, tar 11",
        "/x: xattrs: TOC [(b'user.a', b'1')], tar []",
    ]


def test_hard_links_compare_by_the_path_they_join() -> None:
    toc = tree(entry(2, 1, b"a"), entry(3, 1, b"b"), entry(4, 1, b"c", link=2))
    tar = tree(entry(2, 1, b"a"), entry(3, 1, b"b"), entry(4, 1, b"c", link=3))
    assert metadata_differences(toc, tar) == ["/c: hard link to: TOC /a, tar /b"]


def test_the_tocs_own_files_and_implicit_dirs_are_not_differences() -> None:
    toc = tree(entry(2, 1, b"etc", EntryKind.DIRECTORY, mode=0o700, implicit=True))
    tar = tree(
        entry(2, 1, b"stargz.index.json"),
        entry(3, 1, b".prefetch.landmark"),
        entry(4, 1, b"etc", EntryKind.DIRECTORY, mode=0o755),
    )
    assert metadata_differences(toc, tar) == []


def test_each_toc_chunk_is_checked_at_its_place_in_the_tar() -> None:
    toc = tree(
        entry(2, 1, b"big", size=10, data_offset=100),
        entry(3, 1, b"small", size=4, data_offset=110),
    )
    tar = tree(entry(5, 1, b"small", size=4, data_offset=512),
               entry(6, 1, b"big", size=10, data_offset=1536))  # fmt: skip
    chunks = [TocChunk(100, 6, 0, 9, b"h1"), TocChunk(106, 4, 9, 15, b"h2"),
              TocChunk(110, 4, 15, 20, b"h3")]  # fmt: skip
    checks = content_checks(toc, chunks, tar)
    assert [(c.path, c.offset, c.size, c.sha256) for c in checks] == [
        (b"big", 1536, 6, b"h1"),
        (b"big", 1542, 4, b"h2"),
        (b"small", 512, 4, b"h3"),
    ]


def test_files_of_another_size_or_kind_get_no_content_check() -> None:
    toc = tree(entry(2, 1, b"a", size=4, data_offset=0), entry(3, 1, b"b", size=4, data_offset=4))
    tar = tree(entry(2, 1, b"a", size=5), entry(3, 1, b"b", EntryKind.SYMLINK))
    chunks = [TocChunk(0, 4, 0, 9, b"h"), TocChunk(4, 4, 9, 15, b"h")]
    assert content_checks(toc, chunks, tar) == []


def test_a_verdict_names_the_first_differences_only() -> None:
    differences = [f"/f{i}: only in the tar" for i in range(SHOWN_DIFFERENCES + 5)]
    text = verdict(differences)
    assert text.startswith("/f0: only in the tar; /f1")
    assert text.endswith("; and 5 more")
    assert verdict(["/a: x"]) == "/a: x"
