"""eStargz TOCs: the footer, the TOC's digest, files laid out from chunks, hostile TOCs."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, VerificationFailed
from regfs.layers.estargz import Toc, chunk_bytes, layout, read_toc, toc_offset
from tests.support.estargz_writer import estargz, footer

FILES = [
    ("dir/", b""),
    ("dir/big.bin", os.urandom(2500)),
    ("dir/empty", b""),
    (".no.prefetch.landmark", b"v"),
    ("small.txt", b"hello\n"),
]


def parsed(blob: bytes, toc: bytes) -> Toc:
    offset, size = toc_offset(blob[-51:], len(blob))
    entries = read_toc(blob[offset : len(blob) - size], Digest.of(toc))
    return layout(entries, offset)


def content(blob: bytes, toc: Toc, data_offset: int, size: int) -> bytes:
    """A file's bytes, put together from its chunks as a reader would fetch them."""
    parts = []
    for chunk in toc.chunks:
        if data_offset <= chunk.virtual_offset < data_offset + size:
            member = blob[chunk.compressed_offset : chunk.compressed_end]
            parts.append(chunk_bytes(member, chunk))
    return b"".join(parts)


@pytest.mark.parametrize("legacy", [False, True])
def test_every_file_is_put_together_from_its_verified_chunks(legacy: bool) -> None:
    blob, toc_json = estargz(FILES, chunk_size=1000, legacy=legacy)
    toc = parsed(blob, toc_json)
    shown = {member.path: member for member in toc.members}
    assert set(shown) == {b"dir/", b"dir/big.bin", b"dir/empty", b"small.txt"}  # landmark hidden
    assert len(toc.chunks) == 4  # 1000 + 1000 + 500, and small.txt
    for name, data in FILES[1:]:
        if name.startswith("."):
            continue
        member = shown[name.encode()]
        assert member.size == len(data)
        assert content(blob, toc, member.data_offset, member.size) == data
    assert shown[b"dir/big.bin"].mtime_ns == 1704164645 * 10**9
    assert toc.virtual_size == 2500 + 6


def test_a_toc_that_does_not_match_the_annotation_is_refused() -> None:
    blob, toc_json = estargz(FILES, chunk_size=1000)
    offset, size = toc_offset(blob[-51:], len(blob))
    with pytest.raises(VerificationFailed, match="TOC hashes to"):
        read_toc(blob[offset : len(blob) - size], Digest.of(toc_json + b" "))


def test_a_chunk_changed_on_the_way_is_refused() -> None:
    blob, toc_json = estargz(FILES, chunk_size=1000)
    toc = parsed(blob, toc_json)
    first = toc.chunks[0]
    other = estargz([("x", os.urandom(1000))], chunk_size=1000)[0]
    with pytest.raises(VerificationFailed):
        chunk_bytes(other[: other.index(b"\x1f\x8b", 10)], first)
    with pytest.raises(MalformedContent):
        chunk_bytes(b"\x1f\x8b garbage", first)


@pytest.mark.parametrize(
    "tail",
    [
        b"",
        b"x" * 51,
        footer(10**9),  # points past the blob
        b"\x1f\x8b\x08\x00" + footer(0)[4:],  # no extra field
        footer(0).replace(b"0000000000000000", b"zzzzzzzzzzzzzzzz"),
    ],
)
def test_a_missing_or_wrong_footer_is_malformed(tail: bytes) -> None:
    with pytest.raises(MalformedContent):
        toc_offset(tail, 1000)


def entry(**fields: Any) -> dict[str, Any]:
    return {"name": "f", "type": "reg", "size": 10, "offset": 0,
            "chunkDigest": "sha256:" + hashlib.sha256(b"x").hexdigest()} | fields  # fmt: skip


@pytest.mark.parametrize(
    "entries",
    [
        [entry(size=20, chunkSize=10)],  # chunks cover 10 of 20
        [entry(chunkSize=5), entry(type="chunk", chunkOffset=7, offset=5)],  # a gap
        [entry(type="chunk")],  # a chunk of no file
        [entry(offset=5000)],  # past the TOC
        [entry(chunkDigest="md5:abc")],
        [entry(size=-1)],
        [entry(size=True)],
        [entry(type="socket")],
        [entry(name=7)],
        [entry(xattrs={"user.a": "not base64!"})],
        [entry(modtime="yesterday")],
    ],
)
def test_hostile_tocs_are_malformed(entries: list[dict[str, Any]]) -> None:
    with pytest.raises(MalformedContent):
        layout(entries, 1000)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["name", "type", "size", "offset", "chunkOffset", "chunkSize", "chunkDigest", "mode",
     "modtime", "linkName", "xattrs", "uid", "devMajor"]
)  # fmt: skip


@given(st.lists(st.dictionaries(FIELDS, JSON | st.sampled_from(["reg", "chunk", "dir"]))))
def test_any_toc_is_laid_out_or_malformed(entries: list[dict[str, Any]]) -> None:
    try:
        toc = layout(entries, 1 << 20)
    except MalformedContent:
        return
    for chunk in toc.chunks:
        assert chunk.compressed_offset < chunk.compressed_end <= 1 << 20


@given(st.binary(max_size=200))
def test_any_toc_bytes_are_read_or_refused(data: bytes) -> None:
    with pytest.raises((MalformedContent, VerificationFailed)):
        read_toc(data, Digest.of(json.dumps({"entries": []}).encode()))
