"""An eStargz blob's first entry tells whether its builder marked files to read first."""

from __future__ import annotations

import gzip
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.layers.formats.estargz_head import marks_files
from tests.support.crafted import gzip_layer, member, tar_of


def first_member(name: str, **fields: object) -> bytes:
    """A gzip member holding the tar entry ``name`` (eStargz writes one per entry)."""
    return gzip_layer(member(name, b"v", **fields))


@pytest.mark.parametrize(("name", "marks"), [
    (".no.prefetch.landmark", False), ("./.no.prefetch.landmark", False),
    (".prefetch.landmark", False), ("usr/bin/python3", True), ("etc/passwd", True),
])  # fmt: skip
def test_the_first_entry_says_whether_files_are_marked(name: str, marks: bool) -> None:
    assert marks_files(first_member(name) + b"more members") is marks


def test_a_head_too_short_or_an_extended_header_tells_nothing_yet() -> None:
    member = first_member("usr/bin/python3")
    assert marks_files(member[:12]) is None
    assert (
        marks_files(first_member("usr/bin/python3", pax_headers={"SCHILY.xattr.user.a": "b"}))
        is None
    )


def test_a_first_header_split_across_gzip_members_is_read_whole() -> None:
    for name, marks in ((".no.prefetch.landmark", False), ("usr/bin/python3", True)):
        tar = tar_of([member(name, b"v")], tarfile.GNU_FORMAT)
        assert marks_files(gzip.compress(tar[:200]) + gzip.compress(tar[200:])) is marks
        assert marks_files(gzip.compress(b"") + gzip.compress(tar)) is marks


def test_a_blob_that_is_not_gzip_marks_nothing() -> None:
    assert marks_files(b"\x28\xb5\x2f\xfd not gzip at all") is False


@given(st.binary(max_size=2048))
def test_any_bytes_give_an_answer(head: bytes) -> None:
    assert marks_files(head) in (True, False, None)
