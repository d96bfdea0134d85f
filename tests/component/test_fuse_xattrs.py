"""Extended attributes through ``Operations``: regfs's own (``user.regfs.*``), which fetch
no layer, and the image's (PAX ``SCHILY.xattr``, overlayfs' opaque mark). In-memory
registry, autojump clock."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyfuse3
import pytest
import trio

from tests.support.crafted import GZIP_LAYER, directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel
from tests.support.memory_registry import MemoryRegistry, sha256

BOTTOM = gzip_layer(
    directory("etc/"),
    member("etc/motd", b"bottom\n", pax_headers={"SCHILY.xattr.user.note": "from below"}),
    directory("opt/"),
    member("opt/old", b"hidden\n"),
)
TOP = gzip_layer(
    directory("etc/"),
    member("etc/hostname", b"top\n"),
    directory("opt/"),
    member("opt/.wh..wh..opq", b""),
    member("opt/new", b"shown\n"),
)
REGFS_DIR_XATTRS = ["user.regfs.digest", "user.regfs.media_type"]


@pytest.fixture
def image(registry: MemoryRegistry) -> str:
    """The path of a two-layer image's digest dir."""
    digest = registry.push("app", "1", [BOTTOM, TOP])
    return f"{HOST}/app/{digest.replace(':', '-')}"


async def no_attribute(kernel: Kernel, path: str, name: str) -> bool:
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await kernel.getxattr(path, name)
    return raised.value.errno == pyfuse3.ENOATTR


def layer_gets(registry: MemoryRegistry) -> int:
    return registry.blob_gets(sha256(BOTTOM)) + registry.blob_gets(sha256(TOP))


async def test_the_root_tells_the_mount_s_status_when_asked_by_name(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, tmp_path: Path
) -> None:
    kernel = Kernel(registry, tmp_path, status=lambda: {"mounted": True})
    try:
        assert json.loads(await kernel.getxattr("", "user.regfs.status")) == {"mounted": True}
        assert await kernel.listxattr("") == []  # not listed: `getfattr -d` stays quiet
        assert await no_attribute(kernel, "", "user.nope")
    finally:
        kernel.close()


async def test_an_image_dir_says_what_it_is_from_its_config_alone(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str
) -> None:
    assert await kernel.listxattr(image) == [
        *REGFS_DIR_XATTRS,
        "user.regfs.platform",
        "user.regfs.fetched",
    ]
    digest = image.rsplit("/", 1)[1].replace("-", ":")
    assert await kernel.getxattr(image, "user.regfs.digest") == digest.encode()
    media_type = await kernel.getxattr(image, "user.regfs.media_type")
    assert media_type == b"application/vnd.oci.image.manifest.v1+json"
    assert await kernel.getxattr(image, "user.regfs.platform") == b"linux/amd64"
    size = len(BOTTOM) + len(TOP)
    assert await kernel.getxattr(image, "user.regfs.fetched") == f"0 of {size} (0.0%)".encode()
    assert await no_attribute(kernel, image, "user.nope")
    assert layer_gets(registry) == 0


async def test_what_ls_asks_of_every_entry_fetches_nothing(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str
) -> None:
    await kernel.lookup(f"{image}/1")
    asked = registry.requests.total()
    for path in (image, f"{image}/1"):
        assert await no_attribute(kernel, path, "security.selinux")
        assert await no_attribute(kernel, path, "system.posix_acl_access")
    assert registry.requests.total() == asked


async def test_a_layer_dir_says_how_it_would_be_read_before_fetching_it(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str
) -> None:
    layer = f"{image}/1"
    assert await kernel.listxattr(layer) == [
        *REGFS_DIR_XATTRS,
        "user.regfs.access",
        "user.regfs.fetched",
    ]
    assert await kernel.getxattr(layer, "user.regfs.digest") == sha256(TOP).encode()
    assert await kernel.getxattr(layer, "user.regfs.media_type") == GZIP_LAYER.encode()
    access = await kernel.getxattr(layer, "user.regfs.access")
    assert access == f"not read yet: whole layer ({GZIP_LAYER}): fetched once, checked, " \
                     "indexed".encode()  # fmt: skip
    assert await kernel.getxattr(layer, "user.regfs.fetched") == f"0 of {len(TOP)} (0.0%)".encode()
    assert layer_gets(registry) == 0

    assert await kernel.listdir(layer) == [b"etc", b"opt"]  # indexed now
    assert registry.blob_gets(sha256(TOP)) == 1
    access = await kernel.getxattr(layer, "user.regfs.access")
    assert access == b"whole layer (gzip): fetched once, checked, indexed"
    fetched = await kernel.getxattr(layer, "user.regfs.fetched")
    assert fetched == f"{len(TOP)} of {len(TOP)} (100.0%)".encode()
    assert registry.blob_gets(sha256(BOTTOM)) == 0  # the other layer is not touched


async def test_only_the_fetched_attribute_counts_the_cached_pieces(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """overlayfs asks a lower layer's root for a few ``trusted.overlay.*`` attributes as it
    mounts it (a container start through the layer store): counting what of the layer is
    cached, a stat per piece, cost 20 ms each time for a Debian layer."""
    layer = f"{image}/1"
    await kernel.listdir(layer)
    counted: list[object] = []
    fetched = kernel.layers.fetched

    async def counting(layer_ref: object) -> int:
        counted.append(layer_ref)
        return await fetched(layer_ref)  # type: ignore[arg-type]

    monkeypatch.setattr(kernel.layers, "fetched", counting)
    for name in ("trusted.overlay.opaque", "trusted.overlay.origin", "user.nope"):
        assert await no_attribute(kernel, layer, name)
    assert await kernel.getxattr(layer, "user.regfs.digest") == sha256(TOP).encode()
    assert counted == []
    assert await kernel.getxattr(layer, "user.regfs.fetched") == f"{len(TOP)} of {len(TOP)} " \
                                                                 "(100.0%)".encode()  # fmt: skip
    assert len(counted) == 1


async def test_an_opaque_dir_in_a_layer_dir_carries_overlayfs_mark(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str
) -> None:
    """``.wh..wh..opq`` is not a name in a layer dir: its dir is marked instead, as
    overlayfs takes a lower dir: ``trusted.`` where root mounts it, ``user.`` where it is
    mounted with ``userxattr`` (rootless podman's, in a user namespace), which saw only
    the first and showed the lower layers' names in the opaque dir. The second is not
    listed: overlayfs mounted by root shows a lower dir's listed ``user.`` ones."""
    assert await kernel.listdir(f"{image}/1/opt") == [b"new"]
    assert await kernel.listxattr(f"{image}/1/opt") == ["trusted.overlay.opaque"]
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        assert await kernel.getxattr(f"{image}/1/opt", name) == b"y"
        assert await no_attribute(kernel, f"{image}/0/opt", name)
    assert await kernel.listxattr(f"{image}/0/opt") == []


async def test_rootfs_entries_show_the_image_s_xattrs_and_name_their_layer_on_request(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, image: str
) -> None:
    """``user.regfs.layer`` is answered but not listed: ``cp -a``, ``rsync -X`` and
    ``tar --xattrs`` copy only what the image holds."""
    rootfs = f"{image}/rootfs"
    assert await no_attribute(kernel, rootfs, "user.regfs.layer")  # not indexed: not known
    assert layer_gets(registry) == 0
    assert await kernel.listxattr(f"{rootfs}/etc/motd") == ["user.note"]
    assert await kernel.getxattr(f"{rootfs}/etc/motd", "user.note") == b"from below"
    bottom, top = f"0 {sha256(BOTTOM)}".encode(), f"1 {sha256(TOP)}".encode()
    assert await kernel.getxattr(f"{rootfs}/etc/motd", "user.regfs.layer") == bottom
    assert await kernel.getxattr(f"{rootfs}/etc/hostname", "user.regfs.layer") == top
    assert await kernel.getxattr(f"{rootfs}/etc", "user.regfs.layer") == top
    assert await kernel.getxattr(rootfs, "user.regfs.layer") == top
    assert await kernel.listxattr(f"{rootfs}/etc/hostname") == []
    assert await kernel.listxattr(f"{rootfs}/opt") == []  # merged: no overlayfs mark
    assert await no_attribute(kernel, f"{rootfs}/etc/motd", "user.nope")
    assert await no_attribute(kernel, f"{image}/0/etc/motd", "user.regfs.layer")  # no rootfs


async def test_a_layer_root_shows_its_dot_entry_s_xattrs_once_indexed(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    layer = gzip_layer(
        directory("./", pax_headers={"SCHILY.xattr.user.root": "dot"}),
        member("file", b"x"),
        tar_format=tarfile.PAX_FORMAT,
    )
    digest = registry.push("app", "1", [layer])
    root = f"{HOST}/app/{digest.replace(':', '-')}/0"
    assert "user.root" not in await kernel.listxattr(root)
    await kernel.listdir(root)
    assert "user.root" in await kernel.listxattr(root)
    assert await kernel.getxattr(root, "user.root") == b"dot"
