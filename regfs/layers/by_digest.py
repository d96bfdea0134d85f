"""Manifests and small blobs named by digest: kept in the cache dir, confirmed, or fetched.

Layers layer (the tree's metadata and the SOCI lookup both ask it). What a digest names
never changes, so once a repository's registry served it and it was verified, the bytes
are kept (``regfs.cache.objects``) and a later mount needs the registry only to confirm
the repository still holds it: a HEAD instead of the bytes. While the registry cannot be
reached (``regfs.cache.reachability``), the kept copy is shown as it is; a registry that
answers "unknown" or refuses revokes the kept confirmation and the caller gets that error.

The cache dir is read and written on the event loop: these are small files (a manifest,
a config, a confirmation), read once per mount, and a thread hop would cost more than
the read. Kept bytes hash to their digest (checked when kept and when read back). A fetched blob
is checked here; a fetched manifest by the caller, as it parses it (a signed schema1
manifest's digest covers less than its bytes: it is fetched each mount, never kept).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from regfs.cache.confirmations import Confirmation
from regfs.cache.objects import KeptObject, KeptObjects
from regfs.cache.reachability import Reachability
from regfs.domain.digest import Digest
from regfs.domain.errors import AccessDenied, NotFound
from regfs.domain.verify import verified
from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)


class ByDigest:
    def __init__(self, client: RegistryClient, kept: KeptObjects, reach: Reachability) -> None:
        self._client = client
        self._kept = kept
        self.reach = reach

    async def manifest(self, host: str, repository: str, digest: Digest) -> tuple[bytes, str]:
        """A manifest's exact bytes, which hash to ``digest``, and its media type."""
        kept = self._kept.load(host, repository, digest)
        if kept is not None and kept.media_type is not None:
            confirm = functools.partial(self._client.manifest_exists, host, repository, digest)
            await self._confirmed(host, repository, digest, kept, confirm)
            return kept.data, kept.media_type

        async def fetch() -> tuple[bytes, str]:
            fetched = await self._client.get_manifest(host, repository, str(digest))
            return fetched.raw, fetched.media_type

        raw, media_type = await self.reach.ask(host, fetch, None)
        self._kept.keep(host, repository, digest, raw, media_type=media_type)  # if it hashes right
        return raw, media_type

    async def blob(
        self,
        host: str,
        repository: str,
        digest: Digest,
        *,
        size: int | None,
        max_bytes: int,
        what: str = "blob",
    ) -> bytes:
        """A small blob (a config) whole, which hashes to ``digest`` and is ``size`` bytes
        long (if given); ``what`` it is, for the error if it does not."""
        kept = self._kept.load(host, repository, digest)
        if kept is not None and (size is None or len(kept.data) == size):
            confirm = functools.partial(self._client.blob_exists, host, repository, digest)
            await self._confirmed(host, repository, digest, kept, confirm)
            return kept.data

        async def fetch() -> bytes:
            return await self._client.get_blob(host, repository, digest, max_bytes)

        fetched = await self.reach.ask(host, fetch, None)
        data = verified(fetched, digest, size=size, what=f"{host}/{repository}@{digest}: {what}")
        self._kept.keep(host, repository, digest, data)
        return data

    async def confirm_blob(
        self, host: str, repository: str, digest: Digest, *, urls: tuple[str, ...]
    ) -> None:
        """Return if ``repository`` holds the blob: the registry says so (a HEAD), or it
        said so before and cannot be reached now; else raise (a refusal revokes)."""
        kept = self._kept.confirmations.get(host, repository, digest)
        confirm = functools.partial(self._client.blob_exists, host, repository, digest, urls=urls)
        await self._confirmed(host, repository, digest, kept, confirm)

    def served(self, host: str, repository: str, digest: Digest) -> None:
        """The registry served (or confirmed) the blob in ``repository``: kept for later
        mounts."""
        self._kept.confirmations.add(host, repository, digest)

    async def _confirmed(
        self,
        host: str,
        repository: str,
        digest: Digest,
        kept: KeptObject | Confirmation | None,
        confirm: Callable[[], Awaitable[None]],
    ) -> None:
        """Ask the registry whether ``repository`` still holds ``digest`` (renewing the
        kept confirmation), unless it cannot be reached and something is ``kept``; a
        refusal or "unknown" revokes what was kept."""

        async def ask() -> None:
            await confirm()
            media_type = kept.media_type if kept is not None else None
            self._kept.confirmations.add(host, repository, digest, media_type=media_type)

        try:
            await self.reach.ask(host, ask, kept)
        except (NotFound, AccessDenied):
            self._kept.confirmations.revoke(host, repository, digest)
            raise
