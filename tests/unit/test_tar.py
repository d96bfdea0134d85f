"""The tar scanner against Python's tarfile as an oracle, and against hostile input."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfs.domain.errors import MalformedContent
from regfs.layers.formats.entries import LayerTreeBuilder
from regfs.layers.formats.tar import TarMember, TarScanner, parse_pax

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def make_tar(members: list[tuple[tarfile.TarInfo, bytes]], tar_format: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def scan(data: bytes, piece: int = 1000) -> list[TarMember]:
    scanner = TarScanner()
    members = []
    for start in range(0, len(data), piece):
        members += scanner.feed(data[start : start + piece])
    scanner.finish()
    return members


def info(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(member, key, value)
    return member, data


NAMES = st.text(
    alphabet=st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(NAMES, st.binary(max_size=3000)), min_size=1, max_size=8, unique_by=lambda m: m[0]
    ),
    st.sampled_from(["gnu", "pax"]),
    st.integers(min_value=1, max_value=2000),
)
def test_members_and_offsets_match_tarfile(
    files: list[tuple[str, bytes]], tar_format: str, piece: int
) -> None:
    data = make_tar([info(f"d/{name}", content) for name, content in files], FORMATS[tar_format])
    members = scan(data, piece)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = archive.getmembers()
    assert [m.path.decode("utf-8", "surrogateescape") for m in members] == [
        e.name for e in expected
    ]
    for member, oracle in zip(members, expected, strict=True):
        assert member.size == oracle.size
        assert member.data_offset == oracle.offset_data
        assert (
            data[member.data_offset : member.data_offset + member.size]
            == dict(files)[oracle.name[2:]]
        )


@pytest.mark.parametrize("tar_format", FORMATS)
def test_every_member_kind(tar_format: str) -> None:
    members = [
        info("dir/", type=tarfile.DIRTYPE, mode=0o1777),
        info("dir/file", b"hello", mode=0o4755, uid=1234, gid=5678),
        info("dir/link", type=tarfile.SYMTYPE, linkname="../elsewhere"),
        info("dir/hard", type=tarfile.LNKTYPE, linkname="dir/file"),
        info("dir/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        info("dir/loop", type=tarfile.BLKTYPE, devmajor=7, devminor=0),
        info("dir/fifo", type=tarfile.FIFOTYPE),
    ]
    scanned = scan(make_tar(members, FORMATS[tar_format]))
    assert [chr(m.type) for m in scanned] == ["5", "0", "2", "1", "3", "4", "6"]
    assert scanned[0].mode == 0o1777
    assert (scanned[1].mode, scanned[1].uid, scanned[1].gid) == (0o4755, 1234, 5678)
    assert scanned[2].linkname == b"../elsewhere"
    assert scanned[3].linkname == b"dir/file"
    assert (scanned[4].devmajor, scanned[4].devminor) == (1, 3)
    assert scanned[1].mtime_ns == 1_700_000_000 * 10**9


def test_long_names_and_links_in_gnu_and_pax() -> None:
    long_name, long_link = "a/" + "n" * 300, "t" * 300
    for tar_format in ("gnu", "pax"):
        data = make_tar(
            [info(long_name, b"x"), info("l", type=tarfile.SYMTYPE, linkname=long_link)],
            FORMATS[tar_format],
        )
        first, second = scan(data)
        assert first.path.decode() == long_name
        assert second.linkname.decode() == long_link


def test_pax_xattrs_fractional_mtime_and_binary_values() -> None:
    member, data = info("f", b"x")
    member.pax_headers = {
        "SCHILY.xattr.user.a": "1",
        "mtime": "1700000000.5",
        "SCHILY.xattr.security.capability": "\x01\x00",
    }
    (scanned,) = scan(make_tar([(member, data)], tarfile.PAX_FORMAT))
    assert dict(scanned.xattrs) == {b"user.a": b"1", b"security.capability": b"\x01\x00"}
    assert scanned.mtime_ns == 1_700_000_000_500_000_000


def test_end_of_archive_stops_scanning() -> None:
    data = make_tar([info("f", b"x")], tarfile.PAX_FORMAT) + b"garbage after the end"
    scanner = TarScanner()
    assert len(scanner.feed(data)) == 1
    assert scanner.ended and scanner.offset == len(data)


def header(
    name: bytes = b"f", size: bytes = b"00000000000", checksum: bool = True, typeflag: bytes = b"0"
) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[124:135] = size
    block[156:157] = typeflag
    block[257:263] = b"ustar\0"
    block[148:156] = b" " * 8
    if checksum:
        block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block)


@pytest.mark.parametrize("typeflag", [b"1", b"2", b"3", b"4", b"5", b"6"])
def test_a_header_only_member_has_no_data_whatever_its_size_says(typeflag: bytes) -> None:
    """As GNU tar and Go's archive/tar (umoci) read it: the size would hide ``hidden``."""
    data = header(b"d", size=b"00000001000", typeflag=typeflag) + header(b"hidden")
    assert [member.path for member in scan(data + bytes(1024))] == [b"d", b"hidden"]


def test_an_old_style_regular_member_ending_in_slash_is_a_directory() -> None:
    (member,) = scan(header(b"olddir/", typeflag=b"\0") + bytes(1024))
    assert member.type == ord("5")


def test_a_checksum_summed_signed_as_old_tars_did_is_accepted() -> None:
    """Bytes over 127 count negative in such a checksum; off by one, it is refused."""
    block = bytearray(header(name="café-ß".encode()))
    block[148:156] = b" " * 8
    signed = sum(byte - 256 if byte > 127 else byte for byte in block)
    for checksum, accepted in ((signed, True), (signed + 1, False)):
        block[148:155] = f"{checksum:06o}\0".encode()
        scanner = TarScanner()
        if accepted:
            assert [m.path for m in scanner.feed(bytes(block) + bytes(1024))] == ["café-ß".encode()]
        else:
            with pytest.raises(MalformedContent, match="bad checksum"):
                scanner.feed(bytes(block))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (header(checksum=False), "bad checksum"),
        (header(size=b"0000000zz00"), "size is not a number"),
        (header(typeflag=b"x", size=b"77777777777"), "too large"),
        (header(typeflag=b"x", size=b"00000000010") + b"99 a=b\n".ljust(512, b"\0"),
         "length does not match"),
        (header(size=b"00000001000") + b"x" * 100, "truncated"),
        (header()[:300], "truncated"),
    ],
)  # fmt: skip
def test_hostile_headers_raise_malformed_content(data: bytes, message: str) -> None:
    scanner = TarScanner()
    with pytest.raises(MalformedContent, match=message):
        scanner.feed(data)
        scanner.finish()


@given(st.binary(max_size=3000))
def test_any_bytes_scan_or_raise_malformed_content(data: bytes) -> None:
    scanner = TarScanner()
    try:
        scanner.feed(data)
        scanner.finish()
    except MalformedContent:
        pass


def test_parse_pax_records() -> None:
    assert parse_pax(b"11 path=ab\n12 uid=1000\n") == {"path": b"ab", "uid": b"1000"}
    assert parse_pax(b"11 k=a=b\nc\n\0\0") == {"k": b"a=b\nc"}
    with pytest.raises(MalformedContent):
        parse_pax(b"5 a\n")


@pytest.mark.parametrize(
    "pax",
    [{"uid": str(2**64)}, {"gid": "-1"}, {"mtime": "1e30"}, {"size": str(2**64)},
     {"path": "d/" * 3000}],
)  # fmt: skip
def test_out_of_range_numbers_and_paths_raise_malformed_content(pax: dict[str, str]) -> None:
    member, data = info("f", b"x")
    member.pax_headers = pax
    with pytest.raises(MalformedContent):
        scan(make_tar([(member, data)], tarfile.PAX_FORMAT))


def test_pax_records_for_one_member_are_bounded_in_total() -> None:
    record = "SCHILY.xattr.user.{}=" + "v" * 900_000
    members = []
    for number in range(2):  # two records, each under the bound, together over it
        member = tarfile.TarInfo(f"x{number}")
        member.pax_headers = {record.format(number).split("=")[0]: "v" * 900_000}
        members.append(member)
    data = bytearray()
    for member in members:
        data += member.tobuf(tarfile.PAX_FORMAT)[:-512]  # keep the x record, drop the header
    data += make_tar([info("f", b"x")], tarfile.USTAR_FORMAT)
    with pytest.raises(MalformedContent, match="exceed 1 MiB"):
        scan(bytes(data))


@pytest.mark.parametrize("options", [["--format=gnu"], ["--format=pax", "--sparse-version=1.0"],
                                     ["--format=pax", "--sparse-version=0.1"]])  # fmt: skip
def test_gnu_sparse_files_are_refused_never_served_as_their_map(
    tmp_path: Path, options: list[str]
) -> None:
    """Made by GNU tar itself: the member's data is a sparse map, not the file's bytes."""
    (tmp_path / "plain.txt").write_bytes(b"plain\n")
    with open(tmp_path / "holes.bin", "wb") as file:
        file.seek(8 << 20)
        file.write(b"end")
    archive = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", *options, "-cf", archive, "-C", tmp_path,
                    "plain.txt", "holes.bin"], check=True)  # fmt: skip
    builder = LayerTreeBuilder()
    for member in scan(archive.read_bytes()):
        builder.add(member)
    names = {entry.name for entry in builder.entries()}
    assert b"plain.txt" in names and not any(b"holes" in name for name in names)
    assert builder.warnings == ["'holes.bin' is a GNU sparse file, not supported: skipped"]
