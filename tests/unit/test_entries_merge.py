"""The tar → layer tree rules and the OCI whiteout merge, on hand-made members."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain.errors import MalformedContent
from regfs.layers.formats import entries as entries_module
from regfs.layers.formats.entries import (
    ROOT_ID,
    EntryKind,
    IndexEntry,
    LayerTreeBuilder,
    normalize_path,
)
from regfs.layers.formats.merge import resolve
from regfs.layers.formats.tar import TarMember


def member(
    path: str, kind: str = "0", *, link: str = "", mode: int = 0o644, offset: int = 0
) -> TarMember:
    return TarMember(path.encode(), ord(kind), mode, 0, 0, 3 if kind == "0" else 0, 0,
                     link.encode(), 0, 0, offset)  # fmt: skip


def build(*members: TarMember) -> tuple[dict[str, IndexEntry], list[str]]:
    builder = LayerTreeBuilder()
    for item in members:
        builder.add(item)
    entries = list(builder.entries())
    by_id = {entry.id: entry for entry in entries}

    def path(entry: IndexEntry) -> str:
        parts = []
        while entry.id != ROOT_ID:
            parts.append(entry.name.decode())
            entry = by_id[entry.parent]
        return "/".join(reversed(parts))

    return {path(entry): entry for entry in entries}, builder.warnings


def test_paths_are_normalised_and_parents_made_implicit() -> None:
    tree, _ = build(member("./a//b/./c"))
    assert tree["a"].implicit and tree["a"].kind is EntryKind.DIRECTORY
    assert tree["a/b/c"].kind is EntryKind.FILE
    assert normalize_path(b"a/../../etc") is None
    assert normalize_path(b"/a/./b/../c") == [b"a", b"c"]


def test_the_root_is_implicit_until_the_tar_lists_it() -> None:
    """``./`` gives the layer root its attributes, as ``tar -x`` gives them to the dir it
    extracts into; without it the root is made for its children."""
    tree, _ = build(member("a"))
    assert tree[""].implicit
    tree, _ = build(member("./", "5", mode=0o750), member("a"))
    assert not tree[""].implicit and tree[""].mode == 0o750


def test_climbing_out_and_unsupported_types_are_skipped_with_a_warning() -> None:
    tree, warnings = build(member("../../etc/passwd"), member("sparse", "S"))
    assert set(tree) == {""}
    assert len(warnings) == 2


def test_whiteouts_and_opaque_dirs() -> None:
    tree, _ = build(
        member("d/", "5"), member("d/.wh..wh..opq"), member("d/.wh.gone"), member("d/new")
    )
    assert tree["d"].opaque
    assert tree["d/gone"].kind is EntryKind.WHITEOUT
    assert ".wh..wh..opq" not in "".join(tree)


def test_a_whiteout_hides_lower_layers_only() -> None:
    """OCI, and umoci: a name this layer makes before or after its whiteout stays, and a
    directory of it is opaque, so nothing of a lower one shows through."""
    tree, warnings = build(
        member("a"), member(".wh.a"), member("d/", "5"), member("d/x"), member(".wh.d"),
        member(".wh.e"), member("e/", "5"), member(".wh.f"), member("f/y"),
        member(".wh.g"), member("g"),
    )  # fmt: skip
    assert tree["a"].kind is EntryKind.FILE and tree["g"].kind is EntryKind.FILE
    assert tree["d"].opaque and "d/x" in tree
    assert tree["e"].opaque and not tree["e"].implicit
    assert tree["f"].opaque and tree["f"].implicit and "f/y" in tree
    assert warnings == []


@pytest.mark.parametrize("between", ["0", "2"])
def test_a_dir_made_over_a_non_dir_of_its_own_layer_is_opaque(between: str) -> None:
    """The whiteout, or the file or link that replaced the lower dir, removed what it held
    (umoci and docker remove a path whose kind changes): a dir made there again is new."""
    for members in (
        [member(".wh.d"), member("d", between, link="x"), member("d/", "5"), member("d/y")],
        [member("d", between, link="x"), member("d/", "5")],
    ):
        tree, _ = build(*members)
        assert tree["d"].kind is EntryKind.DIRECTORY and tree["d"].opaque


def test_later_members_replace_earlier_ones() -> None:
    tree, _ = build(
        member("d/", "5", mode=0o700), member("d/x"), member("d/", "5", mode=0o755),
        member("f"), member("f/", "5"), member("g/", "5"), member("g/inner"), member("g"),
    )  # fmt: skip
    assert tree["d"].mode == 0o755 and "d/x" in tree  # a dir over a dir keeps its children
    assert tree["f"].kind is EntryKind.DIRECTORY
    assert tree["g"].kind is EntryKind.FILE and "g/inner" not in tree


def test_members_below_a_file_are_skipped() -> None:
    tree, warnings = build(member("f"), member("f/.wh.x"), member("f/y"))
    assert tree["f"].kind is EntryKind.FILE and set(tree) == {"", "f"}
    assert len(warnings) == 1  # only the real member, not the whiteout


def test_hard_links_share_an_inode_and_count_names() -> None:
    tree, warnings = build(
        member("a", offset=512), member("b", "1", link="a"), member("c", "1", link="./a"),
        member("x", "1", link="missing"),
    )  # fmt: skip
    assert tree["b"].link == tree["a"].id == tree["c"].link
    assert tree["a"].nlink == 3 and tree["b"].data_offset == 512
    assert "x" not in tree and len(warnings) == 1


def test_old_docker_aufs_metadata_is_not_shown_and_its_links_resolve() -> None:
    """A layer pushed by Docker's aufs driver (2013-2016) holds ``.wh..wh.aufs``,
    ``.wh..wh.orph/`` and ``.wh..wh.plnk/`` at its root; docker skips them, and resolves
    hard links into ``.wh..wh.plnk/`` to the files kept there."""
    tree, warnings = build(
        member(".wh..wh.aufs"), member(".wh..wh.orph/", "5"), member(".wh..wh.plnk/", "5"),
        member(".wh..wh.plnk/262.1234", offset=1024), member("bin/", "5"),
        member("bin/a", "1", link=".wh..wh.plnk/262.1234"),
        member("bin/b", "1", link="/.wh..wh.plnk/262.1234"),
        member("etc/.wh..wh.plnk/x"),  # below the root: a plain (if odd) name
    )  # fmt: skip
    assert set(tree) == {"", "bin", "bin/a", "bin/b", "etc", "etc/.wh..wh.plnk",
                         "etc/.wh..wh.plnk/x"}  # fmt: skip
    assert tree["bin/a"].kind is EntryKind.FILE and tree["bin/a"].data_offset == 1024
    assert tree["bin/a"].nlink == 2 and tree["bin/b"].link == tree["bin/a"].id
    assert warnings == []


@pytest.mark.parametrize("itself", ["a", "b"])
def test_a_name_hard_linked_to_itself_changes_nothing(itself: str) -> None:
    """As ``tar -x`` leaves it, whether it is its inode's first name or its last."""
    linked = (member("a", offset=512), member("b", "1", link="a"))
    tree, warnings = build(*linked, member(itself, "1", link=itself))
    assert (tree, warnings) == build(*linked)


def test_a_tree_is_freed_when_dropped_not_left_for_the_garbage_collector() -> None:
    """No node or inode is part of a reference cycle: a layer's tree of 100 000 names
    would otherwise outlive its index until the collector's rarest pass."""
    gc.collect()
    tree, _ = build(*(member(f"d{n % 3}/f{n}") for n in range(50)), member("l", "1", link="d0/f0"),
                    member("d1", "5"), member("d2/.wh.f2"), member("d1/.wh..wh..opq"))  # fmt: skip
    assert tree["d0/f0"].nlink == 2
    del tree
    assert gc.collect() == 0


def test_replacing_the_first_name_keeps_the_other_links() -> None:
    tree, _ = build(member("a", offset=512), member("b", "1", link="a"), member("a", offset=2048))
    assert tree["a"].nlink == 1 and tree["a"].data_offset == 2048
    assert tree["b"].nlink == 1 and tree["b"].data_offset == 512 and tree["b"].link == 0


def entry(
    kind: EntryKind, *, opaque: bool = False, implicit: bool = False, id_: int = 2
) -> IndexEntry:
    return IndexEntry(id_, 1, b"x", kind, 0o755, 0, 0, 0, 0, opaque=opaque, implicit=implicit)


D, F, W = EntryKind.DIRECTORY, EntryKind.FILE, EntryKind.WHITEOUT


def test_merge_rules() -> None:
    file_top = resolve([(2, entry(F)), (1, entry(D))])
    assert file_top is not None and file_top.layer == 2 and not file_top.is_directory
    assert resolve([(2, entry(W)), (1, entry(F))]) is None
    assert resolve([(2, None), (1, entry(F))]).layer == 1  # type: ignore[union-attr]
    merged = resolve([(3, entry(D)), (2, entry(D)), (1, entry(D, opaque=True)), (0, entry(D))])
    assert merged is not None and [layer for layer, _ in merged.directories] == [3, 2, 1]
    hidden = resolve([(2, entry(D)), (1, entry(W)), (0, entry(D))])
    assert hidden is not None and [layer for layer, _ in hidden.directories] == [2]
    over_file = resolve([(2, entry(D)), (1, entry(F)), (0, entry(D))])
    assert over_file is not None and [layer for layer, _ in over_file.directories] == [2]
    attributes = resolve([(2, entry(D, implicit=True)), (1, entry(D))])
    assert attributes is not None and attributes.layer == 1


@given(st.lists(st.one_of(st.none(), st.sampled_from([D, F, W])), max_size=6))
def test_merge_matches_applying_layers_bottom_up(kinds: list[EntryKind | None]) -> None:
    """The top-down rule equals the extraction order an unpacker uses, bottom layer first."""
    state: list[int] = []  # layers whose entry survives (directories may stack)
    for layer, kind in enumerate(kinds):
        if kind is W:
            state = []
        elif kind is F:
            state = [layer]
        elif kind is D:
            state = [*state, layer] if state and kinds[state[-1]] is D else [layer]
    candidates = [
        (layer, entry(kind) if kind else None) for layer, kind in reversed(list(enumerate(kinds)))
    ]
    resolved = resolve(candidates)
    if not state:
        assert resolved is None
    elif kinds[state[-1]] is F:
        assert resolved is not None and resolved.layer == state[-1] and not resolved.is_directory
    else:
        assert resolved is not None and sorted(layer for layer, _ in resolved.directories) == state


PARTS = st.sampled_from(["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", "c"])
MEMBERS = st.builds(
    lambda parts, kind, link: member("/".join(parts), kind, link="/".join(link)),
    st.lists(PARTS, min_size=1, max_size=4),
    st.sampled_from(["0", "1", "2", "5", "3", "6", "S"]),
    st.lists(PARTS, max_size=3),
)


@given(st.lists(MEMBERS, max_size=25))
def test_any_member_list_gives_a_consistent_tree(members: list[TarMember]) -> None:
    """Traversal names, duplicates, links to nowhere: never an error, always a sound tree."""
    builder = LayerTreeBuilder()
    for item in members:
        builder.add(item)
    entries = list(builder.entries())
    by_id = {entry.id: entry for entry in entries}
    assert entries[0].id == ROOT_ID and entries[0].kind is EntryKind.DIRECTORY
    names = set()
    for entry in entries[1:]:
        parent = by_id[entry.parent]
        assert parent.kind is EntryKind.DIRECTORY and parent.id < entry.id
        assert entry.name not in (b"", b".", b"..") and b"/" not in entry.name
        # a whiteout name survives only as the parent directory of another member
        assert not entry.name.startswith(b".wh.") or entry.implicit
        assert (entry.parent, entry.name) not in names
        names.add((entry.parent, entry.name))
        if entry.link:
            owner = by_id[entry.link]
            assert owner.link == 0 and owner.nlink == entry.nlink


def test_deep_trees_and_long_names() -> None:
    deep = "/".join(["d"] * 2000)  # within the 4096-byte path limit, far past recursion limits
    tree, warnings = build(member(deep + "/f"), member("d"), member("n" * 256))
    assert tree["d"].kind is EntryKind.FILE  # replacing the deep tree detaches it iteratively
    assert len(warnings) == 1 and "longer than 255" in warnings[0]


def test_a_layer_of_more_members_than_the_bound_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(entries_module, "MAX_MEMBERS", 100)
    builder = LayerTreeBuilder()
    for n in range(100):
        builder.add(member(f"f{n}"))
    with pytest.raises(MalformedContent, match="more than 100 members"):
        builder.add(member("one-too-many"))
