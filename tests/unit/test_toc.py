"""eStargz and zstd:chunked TOCs: footers, TOC digests, files laid out from chunks, hostile
TOCs."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
import zstandard
from hypothesis import example, given
from hypothesis import strategies as st

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, VerificationFailed
from regfs.domain.verify import verified_sha256
from regfs.layers.formats.toc import (
    ESTARGZ,
    TOC_DIGEST_ANNOTATION,
    ZSTD_CHUNKED,
    Toc,
    TocChunk,
    TocReference,
    chunk_bytes,
    layout,
    read_toc,
    read_zstd_chunked_toc,
    toc_offset,
    toc_reference,
)
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
            parts.append(chunk_bytes(member, chunk, "estargz"))
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
    with pytest.raises(VerificationFailed, match=r"TOC: \d+ bytes hashing to"):
        read_toc(blob[offset : len(blob) - size], Digest.of(toc_json + b" "))


def test_a_chunk_changed_on_the_way_is_refused() -> None:
    """Its bytes come out of the member, and the one verifying getter refuses them."""
    blob, toc_json = estargz(FILES, chunk_size=1000)
    toc = parsed(blob, toc_json)
    first = toc.chunks[0]
    other = estargz([("x", b"y" * 1000)], chunk_size=1000)[0]  # no stray gzip magic inside
    made = chunk_bytes(other[: other.index(b"\x1f\x8b", 10)], first, "estargz")
    with pytest.raises(VerificationFailed, match="does not match its digest"):
        verified_sha256(made, first.sha256, what="chunk")
    with pytest.raises(MalformedContent):
        chunk_bytes(b"\x1f\x8b garbage", first, "estargz")


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
        [entry(uid=1 << 40)],
    ],
)
def test_hostile_tocs_are_malformed(entries: list[dict[str, Any]]) -> None:
    with pytest.raises(MalformedContent):
        layout(entries, 1000)


def test_a_modtime_past_what_a_stat_holds_is_clamped_as_gnu_tar_does() -> None:
    """The year 9999 fits no 64-bit count of nanoseconds: the file is shown at the last
    instant that does (2262), not the layer refused for one date."""
    (member,) = layout([entry(modtime="9999-12-31T00:00:00Z")], 1000).members
    assert member.mtime_ns == (1 << 63) - 1


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
@example([{"type": "reg", "name": "f", "xattrs": {"user.a": "\x80"}}])  # not ASCII: not base64
@example([{"type": "reg", "name": "f", "xattrs": {"\ud800": "YQ=="}}])  # a name UTF-8 refuses
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


def test_a_descriptor_names_its_toc_by_format() -> None:
    checksum = "sha256:" + "a" * 64
    zstd = {
        "io.github.containers.zstd-chunked.manifest-checksum": checksum,
        "io.github.containers.zstd-chunked.manifest-position": "100:20:300:1",
    }
    older = {key.replace("io.github.", "io."): value for key, value in zstd.items()}
    assert toc_reference(zstd) == TocReference(ZSTD_CHUNKED, Digest.parse(checksum), (100, 20, 300))
    assert toc_reference(older) == toc_reference(zstd)
    assert toc_reference({TOC_DIGEST_ANNOTATION: checksum}) == TocReference(
        ESTARGZ, Digest.parse(checksum)
    )
    assert toc_reference({"org.opencontainers.image.title": "x"}) is None
    for position in ("100:20:300", "100:20:300:2", "-1:20:300:1", "a:b:c:1"):
        with pytest.raises(MalformedContent):
            toc_reference({**zstd, "io.github.containers.zstd-chunked.manifest-position": position})


def test_a_zstd_chunked_toc_is_checked_before_it_is_read() -> None:
    raw = json.dumps({"version": 1, "entries": [{"type": "dir", "name": "."}]}).encode()
    compressed = zstandard.ZstdCompressor().compress(raw)
    assert read_zstd_chunked_toc(compressed, Digest.of(compressed), len(raw))[0]["name"] == "."
    with pytest.raises(VerificationFailed):
        read_zstd_chunked_toc(compressed, Digest.of(raw), len(raw))  # the JSON's digest: no
    with pytest.raises(MalformedContent):
        read_zstd_chunked_toc(compressed, Digest.of(compressed), len(raw) - 1)


def test_a_zstd_chunk_is_its_frame_s_first_bytes_checked() -> None:
    data = os.urandom(3000)
    frame = zstandard.ZstdCompressor().compress(data) + b"\x50\x2a\x4d\x18" + bytes(4)
    chunk = TocChunk(0, 3000, 0, len(frame), hashlib.sha256(data).digest())
    assert chunk_bytes(frame, chunk, ZSTD_CHUNKED) == data
    reversed_frame = zstandard.ZstdCompressor().compress(data[::-1])
    with pytest.raises(VerificationFailed):
        verified_sha256(chunk_bytes(reversed_frame, chunk, ZSTD_CHUNKED), chunk.sha256, what="c")
    with pytest.raises(MalformedContent):
        chunk_bytes(b"not zstd", chunk, ZSTD_CHUNKED)


def test_a_file_in_one_piece_may_carry_only_its_digest() -> None:
    whole = entry()
    whole["digest"] = whole.pop("chunkDigest")
    assert layout([whole], 1000).chunks[0].sha256 == hashlib.sha256(b"x").digest()
    with pytest.raises(MalformedContent):
        layout([{**whole, "chunkSize": 5}], 1000)  # a piece of it needs its own digest


def test_the_files_before_the_prefetch_landmark_are_marked() -> None:
    first, second = os.urandom(3000), os.urandom(500)
    files = [("first.bin", first), (".prefetch.landmark", b"v"), ("second.bin", second)]
    toc = parsed(*estargz(files, chunk_size=1000))
    assert toc.prefetch_end == 3000
    assert [m.path for m in toc.members] == [b"first.bin", b"second.bin"]
    assert parsed(*estargz(FILES, chunk_size=1000)).prefetch_end == 0  # .no.prefetch.landmark
