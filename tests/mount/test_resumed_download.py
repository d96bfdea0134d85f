"""A plain gzip layer's download cut off for longer than ``--timeout``: the read is EIO,
and the next read goes on from where the download stopped instead of from byte 0
(``docs/reliability.md``), counted by a proxy in front of registry:2."""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Layered
from tests.support import images
from tests.support.mount import Mount
from tests.support.proxy import CountingProxy

pytestmark = pytest.mark.mount

TIMEOUT = 2
CUT_AT = 12 << 20
"""Bytes of the bottom layer (about 30 MB of gzip) sent before the link goes down."""
BASE_FILE = "0/etc/os-release"


@pytest.fixture
def proxy(layered_proxy: CountingProxy) -> Iterator[CountingProxy]:
    layered_proxy.reset()
    yield layered_proxy
    layered_proxy.cut_after = None
    layered_proxy.ignore_range = False
    layered_proxy.restore_link()


def bottom_layer(layered: Layered) -> tuple[str, int]:
    """The digest and size of the layered image's bottom layer."""
    body, _, _ = images.get_manifest(layered.registry.url, "layered/oci", "1")
    layer = json.loads(body)["layers"][0]
    return layer["digest"], layer["size"]


def read_cut_then_restored(
    tmp_path: Path, layered: Layered, proxy: CountingProxy, digest: str
) -> None:
    """Read a file of the bottom layer while its download is cut midway (EIO), then with
    the link back (the right bytes)."""
    proxy.cut_after = (digest.split(":")[1], CUT_AT)
    mount = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))
    mount.allow_log(rf"WARNING regfs.fuse: .*{digest}: the whole body not received within")
    target = mount / proxy.host / "layered/oci/1" / BASE_FILE
    try:
        with pytest.raises(OSError) as caught:
            target.read_bytes()
        assert caught.value.errno == errno.EIO
        proxy.restore_link()
        assert target.read_bytes() == (layered.oracle_rootfs / "etc/os-release").read_bytes()
    finally:
        mount.close()


def test_a_download_cut_longer_than_the_timeout_goes_on_where_it_stopped(
    tmp_path: Path, layered: Layered, proxy: CountingProxy
) -> None:
    """The blob crosses the link about once in all, and the read after the outage asks
    for the rest with a Range from past the cut, not for the whole blob again."""
    digest, size = bottom_layer(layered)
    read_cut_then_restored(tmp_path, layered, proxy, digest)
    path = f"/v2/layered/oci/blobs/{digest}"
    assert proxy.whole_blob_gets[path] == 1, proxy.blob_ranges
    starts = [int(m.group(1)) for p, r in proxy.blob_ranges if (m := re.match(r"bytes=(\d+)-", r))]
    assert max(starts, default=0) >= CUT_AT - (1 << 20), proxy.blob_ranges
    sent = proxy.blob_bytes(digest)
    assert sent < 1.1 * size, (sent, size)


def test_a_registry_ignoring_range_after_a_cut_still_gives_the_right_bytes(
    tmp_path: Path, layered: Layered, proxy: CountingProxy
) -> None:
    """A registry that answers the resuming Range with the whole blob (200): the bytes
    already kept are skipped, and the file read is right."""
    digest, _ = bottom_layer(layered)
    proxy.ignore_range = True
    read_cut_then_restored(tmp_path, layered, proxy, digest)


def test_a_kept_download_is_removed_when_the_mount_ends(
    tmp_path: Path, layered: Layered, proxy: CountingProxy
) -> None:
    """What a cut download kept in ``tmp/`` goes with the mount, not left to the next."""
    digest, _ = bottom_layer(layered)
    proxy.cut_after = (digest.split(":")[1], CUT_AT)
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache), "--timeout", str(TIMEOUT))
    mount.allow_log(rf"WARNING regfs.fuse: .*{digest}: the whole body not received within")
    try:
        with pytest.raises(OSError):
            (mount / proxy.host / "layered/oci/1" / BASE_FILE).read_bytes()
        assert [path.stat().st_size > 0 for path in (cache / "tmp").iterdir()] == [True]
    finally:
        mount.close()
    assert list((cache / "tmp").iterdir()) == []
