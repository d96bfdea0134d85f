"""The registry part of the tree: root → host → repository path → tag symlinks.

Tree layer. A repository name of any depth is a chain of directories, one per path
component; a directory can be both a repository (it has tags) and a prefix of others.
Names are accepted on lookup even when no listing offers them, because many registries
(Docker Hub, GHCR) refuse ``_catalog``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, NotFound, Unavailable
from regfs.domain.reference import (
    MAX_REPOSITORY_LENGTH,
    is_registry_host,
    is_repository_component,
    is_tag,
)
from regfs.tree.context import TreeContext
from regfs.tree.last_answers import stale_marks
from regfs.tree.node import (
    Directory,
    Kind,
    Node,
    Stat,
    Symlink,
)
from regfs.tree.xattrs import STALE_XATTR, STATUS_XATTR

log = logging.getLogger(__name__)

DIGEST_LINK_LENGTH = len("sha256-") + 64


class Root(Directory):
    """The mountpoint: one directory per registry host named so far."""

    def __init__(self, context: TreeContext) -> None:
        self.context = context
        self.key = ("root",)

    async def stat(self) -> Stat:
        return Stat.expiring(Kind.DIRECTORY, 0, self.context.mount_time_ns)

    async def lookup(self, name: str) -> Node:
        if name not in self.context.aliases and not is_registry_host(name):
            raise NotFound(f"{name!r} is not a registry host name (host[:port])")
        return RepositoryDir(self.context, name, "")

    async def entries(self) -> Sequence[tuple[str, Node]]:
        hosts = dict.fromkeys(sorted(self.context.aliases)) | dict(self.context.known_hosts())
        return [(host, RepositoryDir(self.context, host, "")) for host in hosts]

    async def xattr(self, name: str) -> bytes | None:
        """``user.regfs.status`` (asked for by name, not listed): the mount's state."""
        if name == STATUS_XATTR:
            return json.dumps(self.context.status(), indent=1).encode()
        return await super().xattr(name)


def _children(prefix: str, repositories: Iterable[str]) -> set[str]:
    """The next path components below ``prefix`` ("" for the host) among ``repositories``."""
    start = f"{prefix}/" if prefix else ""
    return {
        name[len(start) :].split("/", 1)[0]
        for name in repositories
        if name.startswith(start) and name != prefix
    }


class RepositoryDir(Directory):
    """A host (``path == ""``) or a repository path below it: sub-paths, tags, digest dirs."""

    def __init__(self, context: TreeContext, host: str, path: str) -> None:
        self.context = context
        self.host = host
        self.path = path
        self.key = ("repository", host, path)

    def _join(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    async def stat(self) -> Stat:
        return Stat.expiring(Kind.DIRECTORY, 0, self.context.mount_time_ns)

    async def _repositories(self) -> tuple[set[str], bool]:
        """Repositories known for the host, and whether the catalog offered them."""
        metadata = self.context.metadata
        catalog = await metadata.repositories(self.host)
        return set(catalog or ()) | metadata.known_repositories(self.host), catalog is not None

    async def _listed_tags(self, repositories: set[str], children: set[str]) -> frozenset[str]:
        """This path's tags for a listing.

        A path the catalog does not name may be only a prefix: "name unknown" then means no
        tags. A refusal is EACCES, unless the path is known to lead to other repositories
        (Docker Hub refuses ``library`` itself but serves ``library/debian``).
        """
        known = self.path in repositories
        try:
            return await self.context.metadata.tags(self.host, self.path)
        except NotFound:
            if known:
                raise
        except AccessDenied:
            if known or not children:
                raise
        return frozenset()

    async def xattrs(self) -> Mapping[str, bytes]:
        """``user.regfs.stale`` while answers shown here are the last kept ones."""
        stale = stale_marks(self.context.metadata.last_answers, self.host, self.path)
        return {STALE_XATTR: json.dumps(stale).encode()} if stale else {}

    async def entries(self) -> Sequence[tuple[str, Node]]:
        repositories, from_catalog = await self._repositories()
        children = _children(self.path, repositories)
        tags: frozenset[str] = frozenset()
        if self.path and (self.path in repositories or not from_catalog):
            tags = await self._listed_tags(repositories, children)
        result: list[tuple[str, Node]] = [
            (name, RepositoryDir(self.context, self.host, self._join(name)))
            for name in sorted(children)
        ]
        result += [
            (tag, TagLink(self.context, self.host, self.path, tag))
            for tag in sorted(tags - children)
        ]
        return result

    async def lookup(self, name: str) -> Node:
        """A digest dir, a known sub-path, a tag, or a repository path, in that order; a
        name the cached catalog lacks may have been pushed since, so it is asked again.

        Only a registry's "name unknown" may turn a name into a path prefix: when it refuses
        to say (401/403) whether ``name`` is a tag or a repository, the answer is EACCES,
        never a directory that would show a different tree.
        """
        digest = Digest.from_dir_name(name)
        if digest is not None and self.path:
            await self.context.metadata.image(self.host, self.path, digest)
            from regfs.tree.image import ImageDir  # the layer readers: imported once needed

            return ImageDir(self.context, self.host, self.path, digest)
        full = self._join(name)
        repositories, from_catalog, through_mirrors = await self._repositories_for(full)
        if name in _children(self.path, repositories):
            return RepositoryDir(self.context, self.host, full)
        try:
            tag = await self._tag(name, self.path in repositories or not from_catalog)
        except Unavailable:
            if not through_mirrors:
                raise
            tag = None  # no mirror has it and the registry is away: taken as a prefix
        if isinstance(tag, TagLink):
            return tag
        refusal = tag
        if is_repository_component(name) and len(full) <= MAX_REPOSITORY_LENGTH:
            if not from_catalog and refusal is None:
                # Without a catalog a prefix cannot be told from a typo: take the name.
                return RepositoryDir(self.context, self.host, full)
            try:
                if await self._is_repository(full):
                    return RepositoryDir(self.context, self.host, full)
            except AccessDenied as error:
                refusal = refusal or error
            if from_catalog and await self._in_catalog_again(name):
                return RepositoryDir(self.context, self.host, full)
        where = f"{self.host}/{self.path}" if self.path else self.host
        if refusal is not None:
            raise AccessDenied(f"{where}: {name!r} refused: {refusal}")
        raise NotFound(f"{where}: no repository or tag {name!r}")

    async def _repositories_for(self, full: str) -> tuple[set[str], bool, bool]:
        """``_repositories`` for a lookup of ``full``, and whether the registry is away and
        a mirror may serve ``full`` instead. With the registry away and no catalog kept:
        if the cache keeps tag lists of the host's repositories, they lead to what it
        keeps, and if a mirror may serve the name, it is asked (an air-gapped node pulls
        through its mirror); other names are then taken as where no catalog is offered."""
        try:
            return *await self._repositories(), False
        except Unavailable:
            metadata = self.context.metadata
            kept = metadata.last_answers.kept_repositories(self.host)
            through_mirrors = metadata.has_mirrors(self.host, full)
            if not kept and not through_mirrors:
                raise
            return set(metadata.known_repositories(self.host)) | kept, False, through_mirrors

    async def _tag(self, name: str, may_have_tags: bool) -> TagLink | AccessDenied | None:
        """The tag ``name`` if it is one, the registry's refusal to say, or None;
        ``may_have_tags``: the catalog names this path, or there is no catalog."""
        if not (self.path and is_tag(name)):
            return None
        try:
            if await self._has_tag(name, may_have_tags):
                return TagLink(self.context, self.host, self.path, name)
        except AccessDenied as error:
            return error
        return None

    async def _has_tag(self, tag: str, may_have_tags: bool) -> bool:
        """True if ``tag`` exists: in a tag list read within the TTL, or else by a HEAD of
        the tag (pushed since the list was read, or no list at hand: the list is then read
        in the background, not waited for: one round trip for ``chroot REPO/TAG/rootfs``,
        not two, and a list of many pages does not hold the lookup up); AccessDenied if
        the registry will not say. Some registries let you pull what they will not list
        (ECR policies): the HEAD answers either way.

        A path the catalog does not name is most likely a prefix: its tag list, one
        request, says so at once ("name unknown"), as before a HEAD. With the registry
        away, a kept tag list that names the tag answers where no answer for the tag itself
        was kept; one that lacks it says nothing (the tag may be newer): the HEAD's failure.
        """
        metadata = self.context.metadata
        listed = metadata.listed_tags(self.host, self.path)
        if listed is None and not may_have_tags:
            try:
                listed = await metadata.tags(self.host, self.path)
            except NotFound:
                return False  # no such repository, so no such tag
            except AccessDenied:
                pass
        elif listed is None:
            metadata.list_tags_later(self.host, self.path)
        if listed is not None and tag in listed:
            return True
        try:
            await metadata.tag_digest(self.host, self.path, tag)
        except NotFound:
            return False
        except Unavailable as unanswered:
            if listed is None:
                with contextlib.suppress(Unavailable):  # kept, if any
                    listed = await metadata.tags(self.host, self.path)
            if listed is not None and tag in listed:
                return True
            # A list that lacks the tag cannot say it is gone (it may be newer), and the
            # HEAD's failure is the one to report: the request may have no time left for
            # asking anything else, whose failure would say "no answer within 0s".
            raise unanswered from None
        return True

    async def _in_catalog_again(self, name: str) -> bool:
        """True if the catalog, asked again (at most every few seconds), has repositories
        below ``name``: pushed since it was read, under a prefix no ``tags/list`` finds."""
        catalog = await self.context.metadata.repositories_again(self.host)
        return name in _children(self.path, catalog or ())

    async def _is_repository(self, repository: str) -> bool:
        """True if ``repository`` answers ``tags/list`` (pushed after the catalog was read);
        False if the registry does not know it; AccessDenied if it will not say."""
        try:
            await self.context.metadata.tags(self.host, repository)
        except NotFound:
            return False
        return True


class TagLink(Symlink):
    """``TAG -> sha256-<hex>``: resolved on each read, trusted for the metadata TTL."""

    def __init__(self, context: TreeContext, host: str, repository: str, tag: str) -> None:
        self.context = context
        self.host = host
        self.repository = repository
        self.tag = tag
        self.key = ("tag", host, repository, tag)

    async def stat(self) -> Stat:
        # The target's length is fixed by its algorithm, so listing a repository with many
        # tags needs no request per tag; readlink resolves it.
        return Stat.expiring(Kind.SYMLINK, DIGEST_LINK_LENGTH, self.context.mount_time_ns)

    async def target(self) -> str:
        digest = await self.context.metadata.tag_digest(self.host, self.repository, self.tag)
        return digest.dir_name
