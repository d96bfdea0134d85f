"""Manifests, configs and SOCI indexes kept by digest, for the repositories that served them.

Cache layer: imports nothing from regfs above it but the domain. A digest never changes
what it names, so what a registry once served and regfs verified can be shown again by
any later mount, with the registry away: the bytes are kept in the chunk cache under
their sha256 (bounded and evicted with the chunks, LRU), and who served them in
``Confirmations`` (with a manifest's media type). Both halves are needed: bytes without a
confirmation for the repository asked about are not shown under it.

Verified when kept and when read back: bytes that do not hash to their digest are never
kept, and a damaged copy is removed. Only sha256 digests are kept (the chunk cache's
names); others are fetched each mount, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from regfs.cache.chunks import ChunkCache, load_verified
from regfs.cache.confirmations import Confirmations
from regfs.domain.digest import Digest


@dataclass(frozen=True, slots=True)
class KeptObject:
    data: bytes
    media_type: str | None
    confirmed_at: float
    """When the repository's registry last served or confirmed it (epoch seconds)."""


class KeptObjects:
    def __init__(self, chunks: ChunkCache, confirmations: Confirmations) -> None:
        self._chunks = chunks
        self.confirmations = confirmations

    def load(self, host: str, repository: str, digest: Digest) -> KeptObject | None:
        """The kept bytes of ``digest``, if ``repository`` was confirmed to hold them and
        they are intact. Blocking."""
        if digest.algorithm != "sha256":
            return None
        confirmation = self.confirmations.get(host, repository, digest)
        if confirmation is None:
            return None
        data = load_verified(self._chunks, bytes.fromhex(digest.hex))
        if data is None:
            return None
        return KeptObject(data, confirmation.media_type, confirmation.at)

    def keep(
        self,
        host: str,
        repository: str,
        digest: Digest,
        data: bytes,
        *,
        media_type: str | None = None,
    ) -> None:
        """Keep ``data``, which ``repository``'s registry just served as ``digest``.
        Blocking; bytes that do not hash to ``digest`` are not kept (nor confirmed)."""
        if digest.algorithm != "sha256" or not digest.matches(data):
            return
        self._chunks.put(bytes.fromhex(digest.hex), data)
        self.confirmations.add(host, repository, digest, media_type=media_type)
