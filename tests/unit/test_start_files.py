"""Finding the files a container's start reads in one layer's entries: the usual layouts
(Debian with and without merged /usr, Fedora, Alpine), symlinks followed only within the
layer, hard links, and hostile symlinks (loops, escapes above the root)."""

from __future__ import annotations

from collections.abc import Iterable

from regfs.layers.formats.entries import IndexEntry, LayerTreeBuilder
from regfs.layers.formats.start_files import (
    MAX_SYMLINKS,
    claimed_by,
    files_in,
    find_file,
    start_files,
)
from regfs.layers.formats.tar import TarMember

REGULAR, HARD_LINK, SYMLINK, DIRECTORY = ord("0"), ord("1"), ord("2"), ord("5")


def member(path: str, kind: int = REGULAR, size: int = 10, target: str = "") -> TarMember:
    return TarMember(path.encode(), kind, 0o755, 0, 0, size if kind == REGULAR else 0, 0,
                     target.encode(), 0, 0, 0)  # fmt: skip


class Entries:
    """A layer's entries, answering as ``LayerIndex`` does."""

    def __init__(self, members: Iterable[TarMember]) -> None:
        tree = LayerTreeBuilder()
        for one in members:
            tree.add(one)
        self.by_id = {entry.id: entry for entry in tree.entries()}
        self.by_name = {(entry.parent, entry.name): entry for entry in self.by_id.values()}

    def root(self) -> IndexEntry:
        return self.by_id[min(self.by_id)]

    def child(self, parent: int, name: bytes) -> IndexEntry | None:
        return self.by_name.get((parent, name))

    def entry(self, entry_id: int) -> IndexEntry:
        return self.by_id[entry_id]

    def path(self, entry: IndexEntry) -> str:
        parts = []
        while entry.id != self.root().id:
            parts.append(entry.name.decode())
            entry = self.by_id[entry.parent]
        return "/".join(reversed(parts))


def found(entries: Entries, architecture: str = "amd64") -> list[str]:
    return [entries.path(entry) for entry in files_in(entries, start_files(architecture))]


def test_debian_with_merged_usr_through_its_links() -> None:
    entries = Entries([
        member("etc/passwd"), member("etc/group"), member("etc/ld.so.cache"),
        member("lib", SYMLINK, target="usr/lib"), member("lib64", SYMLINK, target="usr/lib64"),
        member("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        member("usr/lib/x86_64-linux-gnu/libc.so.6"),
        member("usr/lib64/ld-linux-x86-64.so.2", SYMLINK,
               target="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        member("usr/bin/cat"),
    ])  # fmt: skip
    assert found(entries) == [
        "etc/passwd", "etc/group", "etc/ld.so.cache",
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6",
    ]  # fmt: skip


def test_fedora_lib64_and_alpine_musl() -> None:
    fedora = Entries([member("usr/lib64/ld-linux-x86-64.so.2"), member("usr/lib64/libc.so.6"),
                      member("lib64", SYMLINK, target="usr/lib64")])  # fmt: skip
    assert found(fedora) == ["usr/lib64/ld-linux-x86-64.so.2", "usr/lib64/libc.so.6"]
    alpine = Entries([member("lib/ld-musl-aarch64.so.1"), member("etc/passwd")])
    assert found(alpine, "arm64") == ["etc/passwd", "lib/ld-musl-aarch64.so.1"]
    assert found(alpine, "amd64") == ["etc/passwd"]


def test_an_unknown_architecture_still_gets_the_files_of_etc() -> None:
    entries = Entries([member("etc/passwd"), member("lib/x86_64-linux-gnu/libc.so.6")])
    assert found(entries, "mips64le") == ["etc/passwd"]


def test_a_hard_link_is_its_first_name_and_each_file_comes_once() -> None:
    entries = Entries([
        member("usr/lib/x86_64-linux-gnu/libc.so.6"),
        member("lib/x86_64-linux-gnu/libc.so.6", HARD_LINK,
               target="usr/lib/x86_64-linux-gnu/libc.so.6"),
    ])  # fmt: skip
    # one inode, found under both paths, named by the index's first name of it
    assert found(entries) == ["lib/x86_64-linux-gnu/libc.so.6"]


def test_what_is_not_a_regular_file_with_data_is_skipped() -> None:
    entries = Entries([
        member("etc/passwd", size=0),  # nothing to fetch
        member("etc/group/", DIRECTORY),
        member("etc/ld.so.cache", SYMLINK, target="../var/cache/ld.so.cache"),  # another layer's
        member("lib/x86_64-linux-gnu", REGULAR),  # a file where a directory is looked for
    ])  # fmt: skip
    assert found(entries) == []


def test_relative_links_and_links_above_the_root() -> None:
    entries = Entries([
        member("etc/passwd", SYMLINK, target="../../../../data/passwd"),
        member("data/passwd"),
        member("etc/group", SYMLINK, target="./../data/./group"),
        member("data/group"),
    ])  # fmt: skip
    assert found(entries) == ["data/passwd", "data/group"]


def test_symlink_loops_end() -> None:
    entries = Entries([
        member("etc/passwd", SYMLINK, target="passwd"),
        member("lib", SYMLINK, target="lib64"), member("lib64", SYMLINK, target="/lib"),
    ])  # fmt: skip
    assert found(entries) == []


def test_a_chain_of_links_is_followed_up_to_the_limit() -> None:
    def chain(length: int) -> Entries:
        links = [member(f"l{n}", SYMLINK, target=f"l{n + 1}") for n in range(length)]
        return Entries([*links, member(f"l{length}")])

    assert find_file(chain(MAX_SYMLINKS), b"l0") is not None
    assert find_file(chain(MAX_SYMLINKS + 1), b"l0") is None


def test_a_path_is_claimed_by_the_topmost_layer_holding_a_file_there() -> None:
    """Asked from the top down, each path goes to the first layer holding a regular file
    at it (following that layer's own links), the others are left for the layers below."""
    top = Entries([member("etc/passwd"), member("usr/bin/python3", SYMLINK, target="python3.11"),
                   member("usr/bin/python3.11"), member("etc/group", DIRECTORY)])  # fmt: skip
    bottom = Entries([member("etc/passwd"), member("etc/hosts"), member("usr/lib/libc.so.6")])
    paths = (b"usr/bin/python3", b"etc/passwd", b"etc/hosts", b"etc/group", b"gone")
    claimed, rest = claimed_by(top, paths)
    assert claimed == [b"usr/bin/python3", b"etc/passwd"]
    assert rest == (b"etc/hosts", b"etc/group", b"gone")
    claimed, rest = claimed_by(bottom, rest)
    assert claimed == [b"etc/hosts"]
    assert rest == (b"etc/group", b"gone")
