"""Images built by hand and pushed to registry:2: names that climb out, loops, lies,
100 000 entries in a directory, a decompression bomb, gzip of many members. Nothing outside
the mount is touched, each oddity is skipped or refused with a log line, the daemon stays
within its bounds and keeps answering."""

from __future__ import annotations

import errno
import io
import os
import random
import re
import secrets
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.crafted import (
    gzipped,
    member,
    multi_member_gzip,
    push_layers,
    tar_of,
    zeros_layer,
)
from tests.support.mount import Mount
from tests.support.registry import Registry

pytestmark = pytest.mark.mount

ESCAPE = f"/tmp/regfs-escape-{secrets.token_hex(4)}"
WIDE = 100_000
BOMB = 2 << 30
BOMB_CACHE = 64 << 20
RSS_BOUND = 256 << 20
"""What docs/reliability.md states for a mount's daemon, whatever the image."""


def paths_layer() -> bytes:
    return tar_of(
        [
            member("../../../../../.." + ESCAPE, b"escaped\n"),
            member("dir/../../climb", b"climbed\n"),
            member("/abs/file", b"absolute\n"),
            member("dup", b"first\n"),
            member("dup", b"second\n"),
            member("loop1", None, type=tarfile.SYMTYPE, linkname="loop2"),
            member("loop2", None, type=tarfile.SYMTYPE, linkname="loop1"),
            member("self", None, type=tarfile.SYMTYPE, linkname="self"),
            member("hard-to-nowhere", None, type=tarfile.LNKTYPE, linkname="missing/target"),
            member("..", None, type=tarfile.LNKTYPE, linkname="dup"),
            member(".wh.nothing-here", b""),
        ],
        tarfile.PAX_FORMAT,
    )


def wide_layer() -> bytes:
    """``WIDE`` empty files in one directory. Their headers differ only in the name's
    digits, so each is one header with its digits and checksum put in (tarfile takes 3 s
    to write them)."""
    template = member("many/f000000", b"")[0].tobuf(tarfile.USTAR_FORMAT)
    digits = template.index(b"000000")
    checksum = int(template[148:154], 8) - sum(b"000000")
    headers = []
    for number in range(WIDE):
        name = b"%06d" % number
        header = bytearray(template)
        header[digits : digits + 6] = name
        header[148:155] = b"%06o\0" % (checksum + sum(name))
        headers.append(header)
    return b"".join(headers) + bytes(1024)


def plain_layer() -> bytes:
    return tar_of([member("plain", b"a plain layer\n")], tarfile.PAX_FORMAT)


def long_path_layer() -> bytes:
    return tar_of([member("d/" + "a" * (1 << 20), b"x")], tarfile.PAX_FORMAT)


def many_files_layer() -> bytes:
    return tar_of(
        [member(f"d{n % 7}/f{n}", random.Random(n).randbytes(n * 37)) for n in range(300)],
        tarfile.PAX_FORMAT,
    )


def lying_layer() -> bytes:
    """A member whose header claims 10 MiB, followed by 1 KiB and the end of the blob."""
    info, _ = member("liar", b"")
    info.size = 10 << 20
    return info.tobuf(format=tarfile.USTAR_FORMAT) + b"x" * 1024


@pytest.fixture(scope="module")
def hostile(workdir: Path) -> Iterator[Registry]:
    registry = Registry(workdir / "hostile-registry")
    push_layers(registry.url, "hostile/paths:1", [gzipped(paths_layer())])
    push_layers(registry.url, "hostile/wide:1", [gzipped(wide_layer())])
    push_layers(
        registry.url, "hostile/long-path:1", [gzipped(plain_layer()), gzipped(long_path_layer())]
    )
    push_layers(registry.url, "hostile/liar:1", [gzipped(plain_layer()), gzipped(lying_layer())])
    push_layers(registry.url, "hostile/bomb:1", [zeros_layer(BOMB)])
    push_layers(registry.url, "odd/multi-member:1", [multi_member_gzip(many_files_layer(), 4096)])
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def mount(hostile: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = Mount(tmp_path_factory.mktemp("hostile") / "mnt", "--timeout", "5")
    yield mount
    mount.close()


def rss(mount: Mount) -> int:
    for line in Path(f"/proc/{mount.pid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_names_that_climb_loop_or_lead_nowhere(hostile: Registry, mount: Mount) -> None:
    mount.allow_log(r"climbs out of the layer root: skipped",
                    r"'hard-to-nowhere' is a hard link to a missing")  # fmt: skip
    image = mount / hostile.host / "hostile/paths/1"
    rootfs = image / "rootfs"
    assert sorted(os.listdir(rootfs)) == ["abs", "dup", "loop1", "loop2", "self"]
    assert (rootfs / "abs/file").read_bytes() == b"absolute\n"
    assert (rootfs / "dup").read_bytes() == b"second\n"  # the later member wins, as tar -x
    assert os.readlink(rootfs / "loop1") == "loop2"
    for looped in ("loop1", "self"):
        with pytest.raises(OSError) as caught:
            (rootfs / looped).read_bytes()
        assert caught.value.errno == errno.ELOOP
    whiteout = (image / "0/nothing-here").lstat()  # a whiteout of nothing hides nothing
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert not os.path.lexists(ESCAPE)
    log = mount.log()
    assert log.count("climbs out of the layer root") == 3, log


def test_a_directory_of_100_000_entries(hostile: Registry, mount: Mount) -> None:
    image = mount / hostile.host / "hostile/wide/1"
    expected = [f"f{n:06}" for n in range(WIDE)]
    for many in (image / "0/many", image / "rootfs/many"):
        start = time.monotonic()
        assert sorted(os.listdir(many)) == expected
        took = time.monotonic() - start
        assert (many / expected[-1]).stat().st_size == 0
        assert took < 60, took
    assert rss(mount) < RSS_BOUND


@pytest.mark.parametrize(
    ("repository", "message"),
    [
        ("hostile/long-path", r"tar metadata record of 1048592 bytes is too large"),
        ("hostile/liar", r"tar stream truncated at offset \d+"),
    ],
)
def test_a_layer_that_cannot_be_indexed_is_eio_and_the_rest_is_served(
    hostile: Registry, mount: Mount, repository: str, message: str
) -> None:
    mount.allow_log(rf"{repository}@sha256:[0-9a-f]+: ({message})")
    image = mount / hostile.host / repository / "1"
    assert (image / "0/plain").read_bytes() == b"a plain layer\n"
    for broken in (image / "1", image / "rootfs"):
        with pytest.raises(OSError) as caught:
            os.listdir(broken)
        assert caught.value.errno == errno.EIO
    assert os.listdir(mount / hostile.host / repository) == ["1"]
    assert len(re.findall(message, mount.log())) == 1  # one line, though asked twice


def test_a_gzip_of_many_members_reads_as_gzip(hostile: Registry, mount: Mount) -> None:
    """One member per 4 KiB and an empty member after each, as eStargz and ``pigz
    --independent`` write gzip: every file equals the tar's."""
    image = mount / hostile.host / "odd/multi-member/1"
    with tarfile.open(fileobj=io.BytesIO(many_files_layer())) as archive:
        for info in archive.getmembers():
            expected = archive.extractfile(info).read()  # type: ignore[union-attr]
            assert (image / "rootfs" / info.name).read_bytes() == expected, info.name
            assert (image / "0" / info.name).read_bytes() == expected, info.name


def test_a_decompression_bomb_stays_within_the_cache_size(
    hostile: Registry, tmp_path: Path
) -> None:
    """2 GiB of zeros in 2 MiB of gzip, with the smallest cache: the cache holds its bound,
    memory too, and the mount answers other requests while the layer is indexed."""
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache), "--cache-size", str(BOMB_CACHE))
    try:
        zeros = mount / hostile.host / "hostile/bomb/1/rootfs/zeros"
        first_pass = threading.Thread(target=zeros.stat)
        first_pass.start()
        slowest = 0.0
        while first_pass.is_alive():
            start = time.monotonic()
            os.listdir(mount.path)  # answered by the daemon each time
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)
        assert slowest < 1, slowest
        assert zeros.stat().st_size == BOMB
        with open(zeros, "rb") as file:
            assert file.read(4096) == bytes(4096)
            file.seek(BOMB - 4096)
            assert file.read() == bytes(4096)
        used = int(subprocess.run(["du", "-sb", cache], capture_output=True, text=True,
                                  check=True).stdout.split()[0])  # fmt: skip
        assert used <= BOMB_CACHE, used
        assert rss(mount) < RSS_BOUND
    finally:
        mount.close()
