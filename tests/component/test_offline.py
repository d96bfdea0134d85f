"""A registry that cannot be reached: what a mount read before stays readable in the next.

In-memory registry (``down``: every request 503), a real layer store on a cache dir two
mounts share, autojump clock.
"""

from __future__ import annotations

import errno
import json
import stat
from contextlib import closing
from pathlib import Path

import pyfuse3
import pytest
import trio

from regfs.cache.reachability import RECHECK, Reachability
from regfs.registry.request_deadline import progressed, request_deadline
from regfs.tree.last_answers import StalePolicy
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel, errno_of, readdir_reply
from tests.support.memory_registry import MemoryRegistry

LAYER = gzip_layer(directory("etc/"), member("etc/motd", b"hello from the cache\n"))
STALE = "user.regfs.stale"


@pytest.fixture(autouse=True)
def kernel_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readdir replies go to the harness's tokens (the ``kernel`` fixture does this too)."""
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)


@pytest.fixture
def image(registry: MemoryRegistry) -> str:
    """The digest dir name of ``app:1``."""
    return registry.push("app", "1", [LAYER]).replace(":", "-")


async def read_everything(kernel: Kernel, image: str) -> None:
    """What a user does first: list the host and repository, follow the tag, read a file."""
    assert b"app" in await kernel.listdir(HOST)
    assert await kernel.listdir(f"{HOST}/app") == [b"1"]
    assert await kernel.readlink(f"{HOST}/app/1") == image.encode()
    assert await kernel.read(f"{HOST}/app/{image}/rootfs/etc/motd") == b"hello from the cache\n"
    assert json.loads(await kernel.read(f"{HOST}/app/{image}/config"))["rootfs"]


async def first_mount(registry: MemoryRegistry, image: str, cache_dir: Path) -> None:
    first = Kernel(registry, cache_dir)
    try:
        await read_everything(first, image)
    finally:
        first.close()


async def test_a_remount_while_the_registry_is_down_shows_what_was_read(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    await first_mount(registry, image, tmp_path)
    registry.down = True
    with closing(Kernel(registry, tmp_path)) as second:
        await read_everything(second, image)
        assert json.loads(await second.read(f"{HOST}/app/{image}/manifest"))["layers"]
        host_marks = json.loads(await second.getxattr(HOST, STALE))
        assert set(host_marks) == {"catalog"}
        repository_marks = json.loads(await second.getxattr(f"{HOST}/app", STALE))
        assert set(repository_marks) == {"tags", "targets"}
        assert set(repository_marks["targets"]) == {"1"}
        assert STALE in await second.listxattr(f"{HOST}/app")
        assert registry.requests["while down"] > 0


@pytest.mark.parametrize("ttl", [0.0, 3600.0])
async def test_fresh_answers_replace_stale_ones_once_the_registry_is_back(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path, ttl: float
) -> None:
    """Answers shown from the cache during the outage are kept in memory like any other, for
    the metadata TTL (which runs on the real clock, not the test's: at 3600 s they never
    end here); the first request the registry answers again ends them all at once."""
    await first_mount(registry, image, tmp_path)
    registry.down = True
    with closing(Kernel(registry, tmp_path, ttl=ttl)) as second:
        await read_everything(second, image)
        registry.down = False
        moved = registry.push("app", "1", [LAYER, LAYER]).replace(":", "-")
        await trio.sleep(RECHECK + 1)  # a host found down is not asked again before
        assert await second.listdir(f"{HOST}/app/{moved}")  # a manifest never kept: asked
        assert await second.readlink(f"{HOST}/app/1") == moved.encode()
        assert await second.listdir(f"{HOST}/app") == [b"1"]
        assert b"app" in await second.listdir(HOST)
        assert STALE not in await second.listxattr(HOST)
        assert STALE not in await second.listxattr(f"{HOST}/app")
        assert await errno_of(lambda: second.getxattr(f"{HOST}/app", STALE)) == errno.ENODATA


async def test_a_refusal_is_not_an_outage(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    """Access revoked after the first mount: EACCES everywhere, nothing from the cache."""
    await first_mount(registry, image, tmp_path)
    registry.fail("app", 401)
    with closing(Kernel(registry, tmp_path)) as second:
        assert await errno_of(lambda: second.listdir(f"{HOST}/app")) == errno.EACCES
        motd = f"{HOST}/app/{image}/rootfs/etc/motd"
        assert await errno_of(lambda: second.read(motd)) == errno.EACCES


async def test_without_stale_answers_listings_fail_but_digests_still_read(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    """``--no-stale``: what a digest names is never stale, so it still reads."""
    await first_mount(registry, image, tmp_path)
    registry.down = True
    with closing(Kernel(registry, tmp_path, stale=StalePolicy(allowed=False))) as second:
        assert await errno_of(lambda: second.listdir(f"{HOST}/app")) == errno.EIO
        assert await errno_of(lambda: second.readlink(f"{HOST}/app/1")) == errno.EIO
        motd = f"{HOST}/app/{image}/rootfs/etc/motd"
        assert await second.read(motd) == b"hello from the cache\n"


async def test_what_was_never_read_fails_within_the_timeout(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    other = registry.push("other", "1", [LAYER]).replace(":", "-")
    await first_mount(registry, image, tmp_path)
    registry.down = True
    with closing(Kernel(registry, tmp_path, request_timeout=5)) as second:
        start = trio.current_time()
        assert await errno_of(lambda: second.listdir(f"{HOST}/other/{other}")) == errno.EIO
        assert trio.current_time() - start <= 5


async def test_a_kept_manifest_is_confirmed_with_a_head_not_fetched_again(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    digest = image.replace("-", ":")
    await first_mount(registry, image, tmp_path)
    with closing(Kernel(registry, tmp_path)) as second:
        await read_everything(second, image)
        assert registry.requests[f"GET manifests app {digest}"] == 1
        assert registry.requests[f"HEAD manifests app {digest}"] == 1


async def test_a_kept_tag_list_still_leads_to_its_tags_with_no_target_kept(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, image: str, tmp_path: Path
) -> None:
    """The first mount listed the repository but never followed the tag: with the
    registry down, the tag is still a link (the kept list says so), as ``ls`` shows it;
    only its target, never asked, is EIO."""
    first = Kernel(registry, tmp_path)
    try:
        assert await first.listdir(f"{HOST}/app") == [b"1"]
    finally:
        first.close()
    registry.down = True
    with closing(Kernel(registry, tmp_path, request_timeout=5)) as second:
        attributes = await second.lookup(f"{HOST}/app/1")
        assert stat.S_ISLNK(attributes.st_mode)
        assert await errno_of(lambda: second.readlink(f"{HOST}/app/1")) == errno.EIO


async def test_a_tag_the_kept_list_lacks_is_eio_naming_the_unanswered_head(
    autojump_clock: trio.abc.Clock,
    registry: MemoryRegistry,
    image: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registry that stops answering: ``stat REPO/NEWTAG`` waits for the HEAD of the tag
    until ``--timeout``, then fails with that HEAD named, not with a request sent after the
    deadline ("no answer within 0s") nor a tag list kept from before taken for "no such tag"."""
    await first_mount(registry, image, tmp_path)
    registry.stalled = {"app", "app/new"}
    with closing(Kernel(registry, tmp_path, request_timeout=5)) as second:
        start = trio.current_time()
        assert await errno_of(lambda: second.lookup(f"{HOST}/app/new")) == errno.EIO
        assert trio.current_time() - start <= 5
    failures = [r.getMessage() for r in caplog.records if r.name == "regfs.fuse"]
    assert failures == [f"lookup: {HOST}: /v2/app/manifests/new: no answer within 5s"]


@pytest.mark.parametrize("progressing", [True, False])
async def test_a_registry_that_keeps_answering_past_the_patience_is_not_away(
    autojump_clock: trio.abc.Clock, progressing: bool
) -> None:
    """A catalog kept from before, asked again on a far link: its 20 pages take 6 s, past
    the patience of 1 s (half a --timeout of 2), each in 0.3 s. It was "cannot be reached",
    the kept catalog shown as stale with a warning; only a registry that brings nothing for
    the patience is away."""
    reachability = Reachability(patience=1.0)

    async def pages() -> str:
        for _ in range(20):
            await trio.sleep(0.3)
            if progressing:
                progressed()
        return "fresh"

    with request_deadline(2.0):
        answer = await reachability.ask("far.example", pages, "kept")
    assert answer == ("fresh" if progressing else "kept")
    assert bool(reachability.unreachable()) is not progressing
