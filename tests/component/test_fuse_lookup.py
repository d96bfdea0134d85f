"""Lookups as the kernel makes them, through ``Operations``: repository paths of any depth,
tags and digest dirs, refusals, and which missing names the kernel may remember.
In-memory registry, real layer store, autojump clock."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pyfuse3
import pytest
import trio

from regfs.fuse.operations import IMMUTABLE_TIMEOUT
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel
from tests.support.memory_registry import MemoryRegistry, sha256

LAYER = gzip_layer(directory("etc/"), member("etc/hostname", b"regfs\n"))
TTL = 60.0


async def errno_of(kernel: Kernel, path: str) -> int:
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await kernel.lookup(path)
    return raised.value.errno


async def test_a_tag_is_a_link_to_its_digest_dir_which_never_expires(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    digest = registry.push("app", "1", [LAYER])
    tag = await kernel.lookup(f"{HOST}/app/1")
    assert stat.S_ISLNK(tag.st_mode) and tag.st_size == len(digest)
    assert tag.entry_timeout == tag.attr_timeout == TTL  # a tag moves
    assert await kernel.readlink(f"{HOST}/app/1") == digest.replace(":", "-").encode()
    image = await kernel.lookup(f"{HOST}/app/{digest.replace(':', '-')}")
    assert stat.S_ISDIR(image.st_mode) and stat.S_IMODE(image.st_mode) == 0o555
    assert image.entry_timeout == image.attr_timeout == IMMUTABLE_TIMEOUT


async def test_a_digest_dir_is_the_digest_even_where_a_tag_has_its_name(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """A tag may be spelt like a digest dir: the name means the digest, and the listing
    leaves such a tag out, so a name shows one tree only."""
    wanted = registry.push("app", "1", [LAYER])
    other = registry.push("app", "2", [gzip_layer(member("other", b"x"))])
    lookalike = wanted.replace(":", "-")
    registry.repositories["app"].tags[lookalike] = other
    assert await kernel.listdir(f"{HOST}/app") == [b"1", b"2"]
    assert await kernel.read(f"{HOST}/app/{lookalike}/rootfs/etc/hostname") == b"regfs\n"


async def test_a_digest_dir_is_only_where_its_repository_serves_it(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    digest = registry.push("app", "1", [LAYER])
    registry.push("other", "1", [gzip_layer(member("other", b"x"))])
    assert await errno_of(kernel, f"{HOST}/other/{digest.replace(':', '-')}") == errno.ENOENT
    assert await errno_of(kernel, f"{HOST}/app/sha256-{'0' * 64}") == errno.ENOENT
    assert await errno_of(kernel, f"{HOST}/app/sha256-abc") == errno.ENOENT


@pytest.mark.parametrize("catalog", [200, 401])
async def test_repository_paths_are_a_dir_per_component(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, catalog: int
) -> None:
    """``nested/a/b/c`` is four dirs; ``app`` is a repository and a prefix of ``app/sub``:
    its dir shows both. Without a catalog the same names are found by lookup."""
    for repository in ("nested/a/b/c", "app", "app/sub"):
        registry.push(repository, "1", [LAYER])
    registry.catalog_status = catalog
    for path in ("nested", "nested/a", "nested/a/b", "nested/a/b/c", "app", "app/sub"):
        assert stat.S_ISDIR((await kernel.lookup(f"{HOST}/{path}")).st_mode), path
    for path in ("nested/a/b/c/1", "app/1", "app/sub/1"):
        assert stat.S_ISLNK((await kernel.lookup(f"{HOST}/{path}")).st_mode), path
    if catalog == 200:
        assert await kernel.listdir(HOST) == [b"app", b"nested"]
        assert await kernel.listdir(f"{HOST}/nested/a") == [b"b"]
        assert await kernel.listdir(f"{HOST}/app") == [b"sub", b"1"]


@pytest.mark.parametrize(
    ("status", "expected"), [(401, errno.EACCES), (403, errno.EACCES), (404, 0)]
)
async def test_only_name_unknown_makes_a_prefix_and_a_refusal_is_eacces(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    kernel: Kernel,
    status: int,
    expected: int,
) -> None:
    """With no catalog, ``team/app`` may be a repository or a prefix; a registry that
    refuses to say which gets EACCES, never a dir that would show another tree."""
    registry.catalog_status = 401
    registry.fail("team", status)
    registry.fail("team/app", status)
    team = await kernel.lookup(f"{HOST}/team")  # no catalog: a name is taken as it is
    assert stat.S_ISDIR(team.st_mode)
    if expected:
        assert await errno_of(kernel, f"{HOST}/team/app") == expected
    else:
        assert stat.S_ISDIR((await kernel.lookup(f"{HOST}/team/app")).st_mode)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_tag_of_a_listed_repository_is_eacces(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, status: int
) -> None:
    registry.push("team/app", "1", [LAYER])
    registry.fail("team/app", status)
    assert stat.S_ISDIR((await kernel.lookup(f"{HOST}/team/app")).st_mode)  # in the catalog
    assert await errno_of(kernel, f"{HOST}/team/app/1") == errno.EACCES


async def test_a_tag_that_is_not_listed_is_found_by_its_manifest(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """Pushed after the tag list was read: a new name in a dir the kernel has listed
    drops that listing from the kernel's cache before it is answered."""
    registry.push("app", "1", [LAYER])
    assert await kernel.listdir(f"{HOST}/app") == [b"1"]
    registry.push("app", "2", [LAYER])
    assert stat.S_ISLNK((await kernel.lookup(f"{HOST}/app/2")).st_mode)
    assert kernel.invalidator.invalidated == [await kernel.inode(f"{HOST}/app")]


async def test_a_missing_name_in_a_mutable_dir_is_enoent_asked_again_next_time(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    registry.push("app", "1", [LAYER])
    assert await errno_of(kernel, "not a host!") == errno.ENOENT
    assert await errno_of(kernel, f"{HOST}/app/2") == errno.ENOENT
    registry.push("app", "2", [LAYER])
    assert stat.S_ISLNK((await kernel.lookup(f"{HOST}/app/2")).st_mode)


@pytest.mark.parametrize(
    "missing", ["nope", "0/nope", "0/etc/nope", "rootfs/nope", "rootfs/etc/nope"]
)
async def test_a_missing_name_in_an_immutable_dir_is_a_negative_entry_kept_long(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, missing: str
) -> None:
    """``find``, shells and ld.so ask for missing names again and again: under a digest
    the answer never changes, so the kernel keeps it (inode 0) as long as the dir."""
    digest = registry.push("app", "1", [LAYER])
    absent = await kernel.lookup(f"{HOST}/app/{digest.replace(':', '-')}/{missing}")
    assert absent.st_ino == 0 and absent.entry_timeout == IMMUTABLE_TIMEOUT


async def test_a_name_below_a_file_is_enotdir(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    digest = registry.push("app", "1", [LAYER])
    path = f"{HOST}/app/{digest.replace(':', '-')}/rootfs/etc/hostname/x"
    assert await errno_of(kernel, path) == errno.ENOTDIR


async def test_a_refused_prefix_does_not_hide_the_repositories_below_it(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """Docker Hub refuses ``library`` itself (no catalog either) and serves
    ``library/debian``: a name that answers as a repository is one, whatever its prefix
    said, and the prefix lists the repositories found below it."""
    registry.push("library/debian", "bookworm", [LAYER])
    registry.catalog_status = 401
    registry.fail("library", 401)
    assert await errno_of(kernel, f"{HOST}/library/bookworm") == errno.EACCES
    assert stat.S_ISDIR((await kernel.lookup(f"{HOST}/library/debian")).st_mode)
    assert stat.S_ISLNK((await kernel.lookup(f"{HOST}/library/debian/bookworm")).st_mode)
    assert await kernel.listdir(f"{HOST}/library") == [b"debian"]


@pytest.mark.parametrize("status", [401, 403])
async def test_a_cached_layer_is_shown_only_where_the_registry_serves_it(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    kernel: Kernel,
    tmp_path: Path,
    status: int,
) -> None:
    """Content belongs to repositories: a layer indexed for ``public`` is not shown in
    ``private``, whose registry refuses the blob, in this mount or the next one on the same
    cache; ``public`` in the next mount costs a HEAD, not the blob again."""
    public = registry.push("public", "1", [LAYER])
    private = registry.push("private", "1", [LAYER])
    registry.fail("private", status, kinds=("blobs",))
    assert await kernel.listdir(f"{HOST}/public/{public.replace(':', '-')}/rootfs") == [b"etc"]
    again = Kernel(registry, tmp_path / "cache")
    try:
        for mount in (kernel, again):
            with pytest.raises(pyfuse3.FUSEError) as raised:
                await mount.listdir(f"{HOST}/private/{private.replace(':', '-')}/rootfs")
            assert raised.value.errno == errno.EACCES
        rootfs = f"{HOST}/public/{public.replace(':', '-')}/rootfs"
        assert await again.read(f"{rootfs}/etc/hostname") == b"regfs\n"
    finally:
        again.close()
    layer = sha256(LAYER)
    assert registry.requests[f"GET blobs public {layer}"] == 1
    assert registry.requests[f"HEAD blobs public {layer}"] == 1
    assert registry.requests[f"GET blobs private {layer}"] == 0


async def test_an_index_dir_links_each_platform_and_shows_the_mount_s(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """``latest/rootfs`` works on a multi-platform tag: the index dir shows the image of
    the mount's platform (linux/amd64 here) and links to every platform's digest dir."""
    amd64 = registry.push("multi", "amd64", [LAYER])
    arm64 = registry.push("multi", "arm64", [gzip_layer(member("arm", b"arm64\n"))])
    index = registry.push_index("multi", "latest", {"linux/amd64": amd64, "linux/arm64": arm64})
    here = f"{HOST}/multi/{index.replace(':', '-')}"
    assert await kernel.listdir(here) == [
        b"manifest", b"linux-amd64", b"linux-arm64-v8", b"config", b"0", b"bottom", b"top",
        sha256(LAYER).replace(":", "-").encode(), b"rootfs",
    ]  # fmt: skip
    assert (
        await kernel.readlink(f"{here}/linux-arm64-v8") == f"../{arm64.replace(':', '-')}".encode()
    )
    assert await kernel.readlink(f"{HOST}/multi/latest") == index.replace(":", "-").encode()
    assert await kernel.read(f"{here}/rootfs/etc/hostname") == b"regfs\n"
    assert await kernel.getxattr(here, "user.regfs.platform") == b"linux/amd64"
