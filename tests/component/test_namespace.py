"""The host and repository dirs against an in-process registry whose catalog changes:
a repository pushed after the catalog was read is found by name at once, and names that
do not exist ask for the catalog again only once in a while. Autojump clock."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio

from regfs.domain.errors import NotFound
from regfs.domain.platform import Platform
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.registry.client import RegistryClient
from regfs.registry.config import ClientConfig
from regfs.tree.context import Services, TreeContext
from regfs.tree.metadata import CATALOG_RECHECK_INTERVAL, MetadataLimits, RegistryMetadata
from regfs.tree.namespace import RepositoryDir, TagLink
from tests.support.fake_transport import Handler, StreamingTransport

HOST = "127.0.0.1:5000"
TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")


class ChangingRegistry:
    """A registry of repositories (each with tag ``1``) that tests push to, counting the
    requests it answers by kind."""

    def __init__(self, *repositories: str) -> None:
        self.repositories = set(repositories)
        self.requests: Counter[str] = Counter()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/_catalog":
            self.requests["catalog"] += 1
            return httpx.Response(200, json={"repositories": sorted(self.repositories)})
        tags = TAGS.fullmatch(path)
        if tags is not None:
            self.requests["tags"] += 1
            if tags["name"] in self.repositories:
                return httpx.Response(200, json={"name": tags["name"], "tags": ["1"]})
        else:
            self.requests["other"] += 1
        return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})


def tree(handle: Handler, cache_dir: Path, *, timeout: float, background: bool) -> TreeContext:
    """A tree on the registry ``handle`` answers for; with ``background``, its metadata
    reads tag lists behind lookups, as a mount's does (its ``background.run`` running)."""
    client = RegistryClient(ClientConfig(timeout=timeout), transport=StreamingTransport(handle))
    layers = LayerStore(client, open_mount_cache(client, cache_dir, 1 << 20))
    metadata = RegistryMetadata(client, MetadataLimits(ttl=60), layers.by_digest, layers.answers,
                                background=layers.background if background else None)  # fmt: skip
    return TreeContext(Services(metadata, layers), Platform.parse("linux/amd64"), time.time_ns())


def host_dir(registry: ChangingRegistry, cache_dir: Path) -> RepositoryDir:
    return RepositoryDir(tree(registry.handle, cache_dir, timeout=5, background=False), HOST, "")


async def names(directory: RepositoryDir) -> list[str]:
    return [name for name, _ in await directory.entries()]


@pytest.mark.parametrize(
    ("parent", "pushed", "name"),
    [
        ("", "fresh/repo", "fresh"),  # a new top-level prefix
        ("", "fresh/a/b", "fresh"),
        ("nested/a", "nested/a/new/d", "new"),  # a new branch below a known prefix
        ("app", "app/sub/x", "sub"),  # below a repository: ``sub`` is no tag of it either
    ],
)
async def test_a_repository_pushed_after_the_catalog_is_found_by_name_at_once(
    autojump_clock: trio.abc.Clock, tmp_path: Path, parent: str, pushed: str, name: str
) -> None:
    registry = ChangingRegistry("app", "nested/a/b/c")
    host = host_dir(registry, tmp_path)
    directory = RepositoryDir(host.context, HOST, parent) if parent else host
    assert name not in await names(directory)
    registry.repositories.add(pushed)
    found = await directory.lookup(name)
    assert isinstance(found, RepositoryDir)
    assert found.path == f"{parent}/{name}".lstrip("/")
    assert name in await names(directory)  # the listing shows it too, without waiting
    assert registry.requests["catalog"] == 2


async def test_missing_names_ask_for_the_catalog_again_at_most_once_per_interval(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """`find` and shells look up many names that do not exist: each costs its own
    ``tags/list``, but the catalog (maybe many pages) is asked at most once per interval,
    however many lookups come in that time, at once or one after the other."""
    registry = ChangingRegistry("library/debian")
    host = host_dir(registry, tmp_path)
    await host.entries()
    assert registry.requests["catalog"] == 1

    async def look_up(missing: str) -> None:
        with pytest.raises(NotFound, match="no repository or tag"):
            await host.lookup(missing)

    seconds = 10 * CATALOG_RECHECK_INTERVAL
    start = trio.current_time()
    while trio.current_time() - start < seconds:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(look_up, f"missing{i}")
        await trio.sleep(CATALOG_RECHECK_INTERVAL / 10)
    assert registry.requests["tags"] >= 2000
    assert 1 + 5 <= registry.requests["catalog"] <= 1 + 10


async def test_a_tag_is_asked_for_by_itself_and_its_list_read_behind_it(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """``chroot REPO/TAG/rootfs`` waits for one request of the tag, not for the tag list
    before it (two round trips; a list may be many pages, here one slow one). The list is
    read all the same, in the background, for the next ``ls`` and, kept, for when the
    registry is away; the link's target needs no further request."""
    digest = "sha256:" + "ab" * 32
    asked: list[tuple[str, str]] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        asked.append((request.method, request.url.path))
        if request.url.path == "/v2/_catalog":
            return httpx.Response(200, json={"repositories": ["app"]})
        if request.url.path == "/v2/app/tags/list":
            await trio.sleep(10)
            return httpx.Response(200, json={"name": "app", "tags": ["1", "2"]})
        if request.url.path == "/v2/app/manifests/1" and request.method == "HEAD":
            return httpx.Response(200, headers={"Docker-Content-Digest": digest})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    context = tree(handle, tmp_path, timeout=30, background=True)
    metadata = context.metadata
    async with trio.open_nursery() as nursery:
        nursery.start_soon(context.layers.background.run)
        await trio.sleep(0.1)
        start = trio.current_time()
        tag = await RepositoryDir(context, HOST, "app").lookup("1")
        assert isinstance(tag, TagLink)
        assert trio.current_time() - start < 1
        assert await tag.target() == "sha256-" + "ab" * 32
        with pytest.raises(NotFound):
            await RepositoryDir(context, HOST, "app").lookup("3")
        assert metadata.listed_tags(HOST, "app") is None
        await trio.sleep(11)  # the list's 10 s, counted from when it was asked
        assert metadata.listed_tags(HOST, "app") == frozenset({"1", "2"})
        assert asked.count(("GET", "/v2/app/tags/list")) == 1  # one flight for both lookups
        assert asked.count(("HEAD", "/v2/app/manifests/1")) == 1
        nursery.cancel_scope.cancel()


async def test_below_a_prefix_the_catalog_names_a_missing_name_costs_no_head(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """``team`` leads to ``team/app`` but is no repository: its tag list says so in one
    request ("name unknown"), so ``team/x`` is looked for as a tag without a HEAD."""
    registry = ChangingRegistry("team/app")
    host = host_dir(registry, tmp_path)
    team = await host.lookup("team")
    assert isinstance(team, RepositoryDir)
    with pytest.raises(NotFound):
        await team.lookup("x")
    assert registry.requests["other"] == 0  # no manifest HEAD
    assert registry.requests["tags"] == 2  # team (not a repository), team/x (none either)


async def test_a_refused_tag_list_is_not_asked_again_at_each_lookup(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """ECR policies let you pull what they will not list: each tag answers its HEAD, and
    the list behind the lookups is asked once per TTL, not once per tag."""
    asked: Counter[str] = Counter()

    async def handle(request: httpx.Request) -> httpx.Response:
        asked[f"{request.method} {request.url.path}"] += 1
        if request.url.path == "/v2/_catalog" or request.url.path.endswith("/tags/list"):
            return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "cd" * 32})

    context = tree(handle, tmp_path, timeout=30, background=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(context.layers.background.run)
        for tag in ("1", "2", "3"):
            await trio.sleep(1)
            assert isinstance(await RepositoryDir(context, HOST, "app").lookup(tag), TagLink)
        await trio.sleep(1)
        assert asked["GET /v2/app/tags/list"] == 1
        assert asked["HEAD /v2/app/manifests/3"] == 1
        nursery.cancel_scope.cancel()


async def test_a_tag_list_kept_from_before_is_not_read_behind_a_lookup(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """A list an earlier mount kept already serves an outage; a read behind a lookup, which
    no one waits for, would only risk finding the registry slow and calling it away."""
    asked: Counter[str] = Counter()

    async def handle(request: httpx.Request) -> httpx.Response:
        asked[f"{request.method} {request.url.path}"] += 1
        if request.url.path == "/v2/_catalog":
            return httpx.Response(200, json={"repositories": ["app"]})
        if request.url.path == "/v2/app/tags/list":
            return httpx.Response(200, json={"name": "app", "tags": ["1"]})
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "ef" * 32})

    first = tree(handle, tmp_path, timeout=30, background=True)
    assert [name for name, _ in await RepositoryDir(first, HOST, "app").entries()] == ["1"]
    second = tree(handle, tmp_path, timeout=30, background=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.layers.background.run)
        await trio.sleep(1)
        assert isinstance(await RepositoryDir(second, HOST, "app").lookup("1"), TagLink)
        await trio.sleep(1)
        assert asked["GET /v2/app/tags/list"] == 1  # the first mount's, kept
        assert asked["HEAD /v2/app/manifests/1"] == 1
        nursery.cancel_scope.cancel()
