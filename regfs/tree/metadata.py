"""What the tree knows about registries: listings with a TTL, verified manifests and configs.

Tree layer. Everything named by digest is verified once and then cached without expiry
(bounded by size); listings and tag → digest answers expire after ``ttl`` seconds.
Concurrent requests for one key share a single registry call. What a digest names is kept
in the cache dir for later mounts (``layers/by_digest.py``), and the last answer to each
listing and tag too, shown while the registry cannot be reached (``tree/last_answers.py``).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import cachetools
import trio

from regfs.cache.answers import KeptAnswers, catalog_question, tag_question, tags_question
from regfs.cache.flight import SingleFlight
from regfs.cache.memory import keep
from regfs.domain.digest import Digest
from regfs.domain.errors import (
    AccessDenied,
    NotFound,
    ProtocolError,
    RegfsError,
    VerificationFailed,
)
from regfs.domain.manifest import (
    Descriptor,
    Manifest,
    load_json_object,
    signed_content,
    verified_manifest,
)
from regfs.domain.verify import verified
from regfs.tree.last_answers import ALWAYS_STALE, LastAnswers, StalePolicy, note_repository

if TYPE_CHECKING:  # made by the mount, which imports httpx for them when first needed
    from regfs.layers.background import BackgroundWork
    from regfs.layers.by_digest import ByDigest
    from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 8 << 20
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

TAGS_AHEAD = 16
"""Tags after the one asked for that are resolved with it (see ``tag_digest``)."""
TAG_REQUESTS_AT_ONCE = 8
TAG_LISTS_READ_BEHIND = 2
"""Tag lists read in the background at once (see ``list_tags_later``)."""
CATALOG_RECHECK_INTERVAL = 2.0
"""Seconds between two catalog requests for names a host's cached catalog lacks (see
``repositories_again``)."""


@dataclass(frozen=True, slots=True)
class Image:
    """A manifest fetched by digest, verified, with the exact bytes the registry served."""

    host: str
    repository: str
    digest: Digest
    raw: bytes
    media_type: str
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class MetadataLimits:
    ttl: float = 60.0
    """Seconds a catalog, tag list or tag → digest answer is trusted."""
    manifest_cache_bytes: int = 64 << 20
    config_cache_bytes: int = 64 << 20


class RegistryMetadata:
    """The registry as the tree sees it, with caching and single flight in front."""

    def __init__(
        self,
        client: RegistryClient,
        limits: MetadataLimits,
        by_digest: ByDigest,
        answers: KeptAnswers,
        *,
        stale: StalePolicy = ALWAYS_STALE,
        verify_schema1_signatures: bool = False,
        background: BackgroundWork | None = None,
    ) -> None:
        """``by_digest``: the layer store's (it shares the cache dir and knows which hosts
        are unreachable); ``answers``: where the last answers are kept; ``stale``: when
        they are shown; ``background``: where tag lists no one waits for are read (see
        ``list_tags_later``)."""
        self._client = client
        self._background = background
        self._by_digest = by_digest
        self._answers = answers
        self.last_answers = LastAnswers(answers, by_digest.reach, stale)
        by_digest.reach.when_back(self._forget_stale_answers)
        self._verify_schema1_signatures = verify_schema1_signatures
        self._catalogs: cachetools.TTLCache[str, tuple[str, ...] | None] = cachetools.TTLCache(
            256, limits.ttl
        )
        self._tags: cachetools.TTLCache[tuple[str, str], frozenset[str]] = cachetools.TTLCache(
            4096, limits.ttl
        )
        self._tag_digests: cachetools.TTLCache[tuple[str, str, str], Digest] = cachetools.TTLCache(
            65536, limits.ttl
        )
        self._images: cachetools.LRUCache[tuple[str, str, Digest], Image] = cachetools.LRUCache(
            limits.manifest_cache_bytes, getsizeof=lambda image: len(image.raw) + 512
        )
        self._configs: cachetools.LRUCache[tuple[str, str, Digest], bytes] = cachetools.LRUCache(
            limits.config_cache_bytes, getsizeof=len
        )
        self._catalog_rechecks: cachetools.TTLCache[str, None] = cachetools.TTLCache(
            256, CATALOG_RECHECK_INTERVAL, timer=trio.current_time
        )
        """Hosts whose catalog was asked again for a missing name in the last interval."""
        self._flight: SingleFlight[object] = SingleFlight()
        self._tag_requests = trio.CapacityLimiter(TAG_REQUESTS_AT_ONCE)
        self._lists_behind = trio.CapacityLimiter(TAG_LISTS_READ_BEHIND)
        self._lists_asked: cachetools.TTLCache[tuple[str, str], None] = cachetools.TTLCache(
            4096, limits.ttl
        )
        """Tag lists read in the background within the TTL, read or not: a list refused
        (ECR, Docker Hub's prefixes) is not asked again at each lookup."""
        self.known_hosts: dict[str, None] = {}
        """Hosts that answered at least once, in order; the root dir lists them."""
        self._known_repositories: dict[str, set[str]] = {}

    async def _cached(
        self,
        cache: cachetools.Cache[K, T],
        key: K,
        compute: Callable[[], Awaitable[T]],
        *,
        again: bool = False,
    ) -> T:
        """``cache[key]``, else computed once for all concurrent callers and kept;
        ``again``: computed even if cached (the cached value stays if that fails)."""
        if not again:
            with contextlib.suppress(KeyError):
                return cache[key]

        async def compute_and_store() -> object:
            value = await compute()
            keep(cache, key, value)
            return value

        return await self._flight.run((id(cache), key), compute_and_store)  # type: ignore[return-value]

    def _forget_stale_answers(self, host: str) -> None:
        """``host`` answers again: what was shown from the cache while it was away is asked
        again at its next use, not kept for the rest of its TTL beside fresh answers."""
        caches: dict[str, cachetools.Cache[Any, Any]] = {
            "catalog": self._catalogs, "tags": self._tags, "tag": self._tag_digests,
        }  # fmt: skip
        for kind, asked_of, *names in self.last_answers.stale_questions():
            if asked_of == host:
                caches[kind].pop(host if kind == "catalog" else (host, *names), None)

    def _note(self, host: str, repository: str | None = None) -> None:
        self.known_hosts.setdefault(host)
        if repository:
            self._known_repositories.setdefault(host, set()).add(repository)

    def known_repositories(self, host: str) -> frozenset[str]:
        """Repositories that answered by name, listed even where the catalog is refused."""
        return frozenset(self._known_repositories.get(host, ()))

    def has_mirrors(self, host: str, repository: str) -> bool:
        """Whether ``host/repository`` may be pulled from a mirror (``RegistryClient``)."""
        return self._client.has_mirrors(host, repository)

    async def repositories(self, host: str) -> tuple[str, ...] | None:
        """All repositories in the catalog, or None if this registry does not offer one."""
        return await self._cached(self._catalogs, host, functools.partial(self._catalog, host))

    async def repositories_again(self, host: str) -> tuple[str, ...] | None:
        """The catalog asked again because a name it lacks was looked up: a repository
        pushed since it was read (``fresh/app`` where only ``fresh/app`` is new, so no
        ``tags/list`` of a looked-up prefix finds it) shows at once, as a new tag does.

        Asked at most once per ``CATALOG_RECHECK_INTERVAL`` per host: ``find`` and shells
        look up many names that do not exist, and a catalog may be many pages. Within the
        interval the cached catalog answers (concurrent callers share one request).
        """
        if host in self._catalog_rechecks:
            return await self.repositories(host)
        self._catalog_rechecks[host] = None
        fetch = functools.partial(self._catalog, host)
        return await self._cached(self._catalogs, host, fetch, again=True)

    async def _catalog(self, host: str) -> tuple[str, ...] | None:
        async def fetch() -> list[str] | None:
            try:
                return await self._client.list_repositories(host)
            except (AccessDenied, NotFound, ProtocolError) as error:
                log.info("%s: no catalog (%s); repositories can still be named", host, error)
                return None

        names = await self.last_answers.ask(host, catalog_question(host), fetch)
        self._note(host)
        return None if names is None else tuple(names)

    async def tags(self, host: str, repository: str) -> frozenset[str]:
        async def fetch() -> frozenset[str]:
            async def listed() -> list[str]:
                return sorted(await self._client.list_tags(host, repository))

            question = tags_question(host, repository)
            tags = frozenset(await self.last_answers.ask(host, question, listed) or ())
            self._note(host, repository)
            note_repository(self._answers, host, repository)
            return tags

        return await self._cached(self._tags, (host, repository), fetch)

    def listed_tags(self, host: str, repository: str) -> frozenset[str] | None:
        """The tag list, if one read within the TTL is at hand; else None."""
        return self._tags.get((host, repository))

    def list_tags_later(self, host: str, repository: str) -> None:
        """Read the tag list in the background: a lookup of a tag asks the registry for
        that tag alone and does not wait for a list (maybe many pages), but the list is
        wanted all the same, by the next ``ls`` and, kept, for when the registry is away.
        A few at a time, each at most once per TTL; a failure is the next listing's to
        report. Not when a list is kept already: the next ``ls`` reads it anew, as before,
        and a read no one waits for never serves a kept answer, which would mark the host
        unreachable after ``--timeout``'s patience and warn of it."""

        async def quietly() -> None:
            try:
                async with self._lists_behind:
                    await self.tags(host, repository)
            except RegfsError as error:
                log.debug("%s/%s: tag list not read: %s", host, repository, error)

        key = (host, repository)
        background = self._background
        if background is None or not background.running or key in self._lists_asked:
            return
        self._lists_asked[key] = None  # the kept list's file, too, is looked for once
        if not self.last_answers.kept(tags_question(host, repository)):
            background.start("tag list", f"{host}/{repository}", quietly)

    async def tag_digest(self, host: str, repository: str, tag: str) -> Digest:
        """The digest ``tag`` points at; when it must be asked, the tags after it in the
        listing are asked too, a few at a time (``ls -l`` reads the links one by one, and
        one request after the other costs a round trip each)."""
        key = (host, repository, tag)
        if key in self._tag_digests:
            return self._tag_digests[key]
        failure: RegfsError | None = None
        async with trio.open_nursery() as nursery:  # errors stay out of it: no groups
            nursery.start_soon(self._resolve_tags_after, host, repository, tag)
            try:
                digest = await self._resolve_tag(host, repository, tag)
            except RegfsError as error:
                failure = error
                nursery.cancel_scope.cancel()  # a failing registry is not asked for more
        if failure is not None:
            raise failure
        return digest

    async def _resolve_tag(self, host: str, repository: str, tag: str) -> Digest:
        async def resolve() -> str:
            async with self._tag_requests:
                return str(await self._client.resolve_tag(host, repository, tag))

        async def fetch() -> Digest:
            question = tag_question(host, repository, tag)
            digest = Digest.parse(str(await self.last_answers.ask(host, question, resolve)))
            self._note(host, repository)
            return digest

        return await self._cached(self._tag_digests, (host, repository, tag), fetch)

    async def _resolve_tags_after(self, host: str, repository: str, tag: str) -> None:
        """Resolve the next ``TAGS_AHEAD`` tags of a listing still cached, if unknown; their
        failures are their own readers' to report."""
        listed = sorted(self._tags.get((host, repository), ()))
        start = bisect.bisect_right(listed, tag)
        ahead = [t for t in listed[start : start + TAGS_AHEAD]
                 if (host, repository, t) not in self._tag_digests]  # fmt: skip

        async def quietly(other: str) -> None:
            with contextlib.suppress(RegfsError):
                await self._resolve_tag(host, repository, other)

        async with trio.open_nursery() as nursery:
            for other in ahead:
                nursery.start_soon(quietly, other)

    async def image(self, host: str, repository: str, digest: Digest) -> Image:
        """The manifest named by ``digest``, verified against it and parsed."""

        async def fetch() -> Image:
            raw, media_type = await self._by_digest.manifest(host, repository, digest)
            try:
                manifest = verified_manifest(raw, media_type, digest)
                if self._verify_schema1_signatures:
                    signed = signed_content(raw)
                    if signed is not raw:  # a signed schema1: its JWS signatures
                        # cryptography takes ~30 ms to import: only for this rare check
                        from regfs.registry.schema1_signatures import verify_signatures

                        signatures = load_json_object(raw, "manifest")["signatures"]
                        verify_signatures(signed, signatures)
            except RegfsError as error:
                raise type(error)(f"{host}/{repository}@{digest}: {error}") from None
            self._note(host, repository)
            return Image(host, repository, digest, raw, media_type, manifest)

        return await self._cached(self._images, (host, repository, digest), fetch)

    async def config(self, host: str, repository: str, descriptor: Descriptor) -> bytes:
        """A config blob, checked against its descriptor's digest and size: the one the
        manifest embeds (``data``, an artifact's empty config often is) if it matches,
        with no request, else fetched."""

        async def fetch() -> bytes:
            if descriptor.data is not None:
                try:
                    return verified(descriptor.data, descriptor.digest, size=descriptor.size,
                                    what="embedded config data")  # fmt: skip
                except VerificationFailed as error:
                    log.info("%s/%s: %s: fetched instead", host, repository, error)
            limit = min(descriptor.size or MAX_CONFIG_BYTES, MAX_CONFIG_BYTES)
            return await self._by_digest.blob(
                host,
                repository,
                descriptor.digest,
                size=descriptor.size,
                max_bytes=limit,
                what="config blob",
            )

        return await self._cached(self._configs, (host, repository, descriptor.digest), fetch)
