"""Layer blobs for the tree: their indexes (built once, kept on disk) and their bytes.

Layers layer. ``index`` gives a layer's published index, building it on first use: the
blob is streamed once to a temporary file, checked against its digest, then indexed in a
worker thread. ``read`` serves uncompressed bytes from chunks: memory, then the disk
cache, then the registry, fetching only the span from the nearest checkpoint. Every chunk
is checked against the hash recorded during the verified pass before it is used.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from regfs.cache.layer_images import LayerImages
from regfs.cache.memory import listings_lru
from regfs.cache.temporaries import write_atomically
from regfs.domain import mediatypes
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, VerificationFailed
from regfs.domain.manifest import Descriptor
from regfs.layers.access import current_access, not_a_tar, planned_access
from regfs.layers.builders import FIRST_PASSES_AT_ONCE, IndexBuilders
from regfs.layers.compressed_blob import CompressedBlobs
from regfs.layers.diff_sizes import DiffSizes
from regfs.layers.early_index import EarlyIndexes
from regfs.layers.fetched_share import fetched_bytes
from regfs.layers.index.files import IndexFiles
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.layer_index import LayerIndex, Listings
from regfs.layers.index.meta import ExpectedIndex
from regfs.layers.index_rebuilds import IndexRebuilds
from regfs.layers.layer_reads import LayerReads
from regfs.layers.layer_ref import LayerRef
from regfs.layers.mount_cache import MountCache
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.read_record import ReadRecorder
from regfs.layers.shared_work import SharedWork
from regfs.layers.soci import SociLookup
from regfs.layers.start_reads import StartReads
from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)

INDEXED_AHEAD_AT_ONCE = FIRST_PASSES_AT_ONCE - 1
"""Layers indexed at once that nobody asked for yet (``index_soon``): all the first
passes a mount runs at once but one, so that a layer a reader needs finds room at once."""


class LayerStore:
    """Indexes and chunked reads of layer blobs, shared by every image of a mount."""

    def __init__(
        self,
        client: RegistryClient,
        cache: MountCache,
        *,
        soci_v1_referrers: bool = False,
        background_fetch: bool = False,
        read_record: Path | None = None,
    ) -> None:
        """``cache``: the cache dir, opened (``open_mount_cache``);
        ``soci_v1_referrers`` allows SOCI v1 indexes (see ``regfs.layers.soci``);
        ``background_fetch``: a lazily read layer, once read, is fetched whole behind;
        ``read_record``: where the path of each file first read is written."""
        self._client = client
        self._indexes = cache.indexes
        layout = cache.layout
        self._chunks = cache.chunks
        self._files = IndexFiles(layout)
        self._listings: Listings = listings_lru()
        self._flight: SharedWork[object] = SharedWork()
        self.pieces = VerifiedPieces(self._chunks)
        self.background = cache.background
        """Work of the mount's own: read-ahead, prefetches, indexing ahead."""
        self._reads = LayerReads(
            client, self.pieces, layout.temporary, self._count_fetched, self.background,
            background_fetch=background_fetch,
        )  # fmt: skip
        self._indexing_ahead = trio.CapacityLimiter(INDEXED_AHEAD_AT_ONCE)
        self.recorder = ReadRecorder(read_record) if read_record is not None else None
        """Writes the path of each file first read (``regfs mount --record-reads``)."""
        self._confirmed: set[tuple[str, str, Digest]] = set()
        """(host, repository, blob) the registry served or confirmed in this mount."""
        self._unindexable: dict[Digest, MalformedContent] = {}
        """Layers whose verified bytes cannot be indexed: the same bytes will not do better."""
        self._disagreements: dict[LayerRef, str] = {}
        """Layers whose TOC disagrees with their tar, and how: read whole instead."""
        self.on_fetched: Callable[[LayerRef, int], None] = lambda layer, size: None
        """Called with each piece of a layer's blob received (``regfs prefetch``'s progress)."""
        self.by_digest = cache.by_digest
        """Manifests and configs by digest, kept in the cache dir (the tree's too)."""
        self.answers = cache.answers
        """The last answers to mutable questions (the tree's too)."""
        self.starts = StartReads(
            client, self.by_digest, self.background, index=self.index,
            prefetch=self._reads.prefetch_files, indexing=self._indexing_ahead,
        )  # fmt: skip
        """Fetches ahead what a container's start will read."""
        self._soci = SociLookup(
            client, self.by_digest, self.answers, v1_referrers=soci_v1_referrers
        )
        self._paths: dict[LayerRef, Path] = {}
        """The index each layer is read through, once known (a zTOC's has a name of its own)."""
        self._sizes = DiffSizes()
        self._early = EarlyIndexes(self.background, self._indexes, self._listings)
        self._builders = IndexBuilders(
            client, self._chunks, self._files, layout,
            ranges=self._reads.ranges, served=self._confirm, received=self._count_fetched,
            laid_out=self._laid_out, sized=self._sizes.known, early=self._reads.early,
        )  # fmt: skip
        self._rebuilds = IndexRebuilds(self._builders, self._indexes, self._soci.ztoc_of)
        self.layer_images = LayerImages(layout)
        """Which images each layer was used for, recorded in the cache dir (cache stats)."""
        self._blobs = CompressedBlobs(client, layout, self._reads.context)
        """Layer blobs as the registry stores them (a layer store's ``blob`` files)."""

    def index_soon(self, layers: Sequence[LayerRef]) -> None:
        """Index ``layers`` in the background, each once, in this order, a few at a time:
        an image's layers a rootfs lookup did not need yet (a listing will)."""
        self.background.start_in_turn("indexing ahead", layers, self.index, self._indexing_ahead)

    def _laid_out(self, layer: LayerRef, index: LaidOutIndex) -> None:
        """The layer's TOC or zTOC is read and checked, and its index being written: its
        size is known, its eStargz prefetch may begin, and once its tree is made the index
        answers from it (``early_index.py``)."""
        self._sizes.known(layer, index.meta.uncompressed_size)
        self._reads.prefetch_soon(layer, index)
        if index.has_entries:
            self._early.tree_made(layer, index)

    async def diff_size(self, layer: LayerRef) -> int:
        """The layer's uncompressed size, as its index gives it: with a TOC or zTOC, once
        that is read, while the index is written in the background (``diff_sizes.py``)."""

        async def indexed_size() -> int:
            return (await self.index(layer)).meta.uncompressed_size

        if (known := self.known_index(layer)) is not None:
            return known.meta.uncompressed_size
        indexing = functools.partial(self._sizes.follow, layer, indexed_size)
        if not self.background.start("indexing", layer, indexing):  # no background work here
            return await indexed_size()
        return await self._sizes.wait(layer)

    async def index(self, layer: LayerRef) -> LayerIndex:
        """The layer's index, from memory, from disk, or built now; its use for the
        layer's image is recorded in the cache dir (``regfs cache stats``)."""
        index = await self._resolved_index(layer)
        await self.layer_images.note(layer.digest, layer.host, layer.repository, layer.image)
        return index

    async def _resolved_index(self, layer: LayerRef) -> LayerIndex:
        """The layer's index, from memory, from disk, or built now.

        Index files are shared by every repository (and mount) using the cache dir, but
        content belongs to repositories: before one found on disk is used here, the
        registry must confirm it serves the blob in this one (a HEAD, remembered), or have
        confirmed it before and be unreachable now (``layers/by_digest.py``).
        """
        if not mediatypes.is_tar_layer(layer.descriptor.media_type):  # fetched for nothing
            raise MalformedContent(f"{layer}: {not_a_tar(layer.descriptor.media_type)}")
        cached = self.known_index(layer)
        if cached is not None:
            self._indexes.use(cached)
            return cached

        async def load() -> LayerIndex:
            if layer.digest in self._unindexable:
                raise self._unindexable[layer.digest]
            index, ztoc = await self._index_on_disk(layer)
            if index is not None and not self._serves(layer):
                await self.by_digest.confirm_blob(
                    layer.host, layer.repository, layer.digest, urls=layer.descriptor.urls
                )
            if index is None:
                try:
                    index = await self._build(layer, ztoc)
                except MalformedContent as error:
                    self._unindexable[layer.digest] = error
                    raise
            self._confirm(layer)
            self.by_digest.served(layer.host, layer.repository, layer.digest)
            self._publish(layer, index)
            return index

        # the image is part of the key: another image may give the layer a zTOC, or none
        key = ("index", layer.host, layer.repository, layer.digest, layer.image, layer.soci_index)
        return await self._flight.run(key, load)  # type: ignore[return-value]

    def known_index(self, layer: LayerRef) -> LayerIndex | None:
        """The index this mount reads ``layer`` through, if it has resolved it already;
        never fetches (``stat`` and ``user.regfs.*`` ask this)."""
        path = self._paths.get(layer)
        if path is None or not self._serves(layer):
            return None
        index = self._indexes.get(path)
        if index is None:  # no node holds it now: open the file again (it was checked)
            index = LayerIndex.open(path, self._listings)
            if index is None:
                return None
            self._publish(layer, index)
        return index

    def _publish(self, layer: LayerRef, index: LayerIndex) -> None:
        """``index`` is how this mount reads ``layer`` from now on."""
        self._paths[layer] = index.path
        self._indexes.add(index)
        index.rebuild = self._rebuilds.rebuild_for(layer, index)
        self._sizes.settled(layer, index.meta.uncompressed_size)

    async def _index_on_disk(self, layer: LayerRef) -> tuple[LayerIndex | None, Descriptor | None]:
        """An index of the layer already in the cache, checked to be the layer's, and the
        zTOC its image's SOCI index has for it (if that had to be asked). The index made
        from the whole blob comes first: it is what the layer digest vouches for."""
        index = self._opened(*self._files.whole(layer))
        toc = self._usable_toc(layer)
        if index is None and toc is not None:
            index = self._opened(*toc)
        ztoc = None
        if index is None:
            ztoc = await self._soci.ztoc_of(layer)
            if ztoc is not None:
                index = self._opened(*self._files.soci(layer, ztoc))
        return index, ztoc

    def _opened(self, path: Path, expected: ExpectedIndex) -> LayerIndex | None:
        return self._indexes.get(path) or LayerIndex.open(path, self._listings, expected=expected)

    def _usable_toc(self, layer: LayerRef) -> tuple[Path, ExpectedIndex] | None:
        """Where the index of the layer's TOC is (or would be), unless the layer has no
        TOC or its TOC was found to disagree with its tar."""
        disagreement = self._files.disagreement(layer)
        if disagreement is not None and layer not in self._disagreements:
            with contextlib.suppress(OSError):
                self._disagreements[layer] = disagreement.read_text()
        return None if layer in self._disagreements else self._files.toc(layer)

    def _confirm(self, layer: LayerRef) -> None:
        """The registry served (or confirmed) this blob in this repository."""
        self._confirmed.add((layer.host, layer.repository, layer.digest))

    def _serves(self, layer: LayerRef) -> bool:
        """True once the registry has served (or confirmed) this blob in this repository."""
        return (layer.host, layer.repository, layer.digest) in self._confirmed

    async def _build(self, layer: LayerRef, ztoc: Descriptor | None) -> LayerIndex:
        """Build the layer's index and open it: from its zTOC or its TOC (answering from
        memory as soon as its tree is made: ``early_index.py``), or from its whole blob."""
        toc = self._usable_toc(layer)
        lazily = functools.partial(self._build_lazily, layer, ztoc, toc)
        if (ztoc or toc) and (index := await self._early.build(layer, lazily)):
            return index
        whole = self._files.whole(layer)
        with self._indexes.building(whole[0]):
            await self._builders.whole_once(layer)
            return self._open_built(layer, *whole)

    async def _build_lazily(
        self, layer: LayerRef, ztoc: Descriptor | None, toc: tuple[Path, ExpectedIndex] | None
    ) -> LayerIndex | None:
        """The layer's index built from its zTOC or its TOC (``_usable_toc``) and opened;
        None if neither can be used."""
        soci = self._files.soci(layer, ztoc) if ztoc is not None else None
        with self._indexes.building(*(file[0] for file in (toc, soci) if file)):
            if soci and ztoc and await self._builders.from_ztoc(layer, ztoc, soci[0]):
                built = soci
            elif toc is not None and await self._builders.from_toc(layer, toc[0]):
                built = toc
            else:
                return None
            index = self._open_built(layer, *built)
            self._reads.prefetch_soon(layer, index)
            return index

    async def whole_index(self, layer: LayerRef) -> LayerIndex:
        """The index made from the layer's whole blob (downloaded and checked now if the
        cache has none), whatever TOC or zTOC its image gives it."""
        whole = self._files.whole(layer)
        with self._indexes.building(whole[0]):
            if self._opened(*whole) is None:
                await self._builders.whole_once(layer)
            return self._open_built(layer, *whole)

    async def toc_index(self, layer: LayerRef) -> LayerIndex | None:
        """The index made from the layer's TOC (built now if the cache has none), or None
        if it has no TOC that can be used."""
        toc = self._files.toc(layer)
        if toc is None:
            return None
        with self._indexes.building(toc[0]):
            if self._opened(*toc) is None and not await self._builders.from_toc(layer, toc[0]):
                return None
            return self._open_built(layer, *toc)

    def _open_built(self, layer: LayerRef, path: Path, expected: ExpectedIndex) -> LayerIndex:
        """The index just built (or found) at ``path``, opened and counted as in use."""
        index = self._opened(path, expected)
        if index is None:
            raise VerificationFailed(f"{layer}: index unreadable right after building")
        self._indexes.add(index)
        return index

    def record_disagreement(self, layer: LayerRef, whole: LayerIndex, differences: str) -> None:
        """The layer's TOC says other than its tar: kept beside its index, so that no
        mount on this cache uses that TOC again, and from now on the layer is read here
        through ``whole``, the index of its verified blob."""
        log.warning("%s: its TOC disagrees with its tar, which wins: %s", layer, differences)
        self._disagreements[layer] = differences
        path = self._files.disagreement(layer)
        if path is not None:
            write_atomically(path, differences.encode())
        self._publish(layer, whole)

    async def read(
        self,
        layer: LayerRef,
        index: LayerIndex,
        offset: int,
        size: int,
        file: tuple[int, int] | None = None,
    ) -> bytes:
        """``size`` bytes of the layer's uncompressed tar at ``offset``, verified (for an
        index built from a TOC: of its virtual stream). ``file``: where on that stream the
        file being read lies, so that a sequential reader is read ahead of."""
        return await self._reads.read(layer, index, offset, size, file)

    async def read_blob(self, layer: LayerRef, offset: int, size: int) -> bytes:
        """``size`` bytes of the layer's compressed blob at ``offset``, verified; pieces in
        the cache are served once the blob is confirmed in this repository (as for ``index``)."""
        if not self._serves(layer):
            await self.by_digest.confirm_blob(
                layer.host, layer.repository, layer.digest, urls=layer.descriptor.urls
            )
            self._confirm(layer)
        return await self._blobs.read(layer, offset, size)

    async def warm(self, layer: LayerRef, index: LayerIndex) -> None:
        """Load every piece of the layer, fetching and checking what the cache lacks."""
        await self._reads.warm(layer, index)

    def _count_fetched(self, layer: LayerRef, size: int) -> None:
        self.on_fetched(layer, size)

    def cache_usage(self) -> int:
        """Bytes in the cache dir, as the cache counts them."""
        return self._chunks.usage()

    def access(self, layer: LayerRef) -> str:
        """How the layer is read (``user.regfs.access``), and why not lazily if it could
        have been; before this mount first reads it, how it would be. Never fetches."""
        index = self.known_index(layer)
        if index is None:
            usable_toc = self._usable_toc(layer)  # reads a disagreement kept on disk
            plan = planned_access(
                layer, whole_cached=self._files.whole(layer)[0].exists(),
                disagreement=self._disagreements.get(layer) if usable_toc is None else None,
                soci_v1=self._soci.v1_referrers,
            )  # fmt: skip
            return f"not read yet: {plan}"
        return current_access(
            index.meta,
            soci_source=self._soci.source_of(layer.host, layer.repository, layer.image,
                                             layer.digest),
            disagreement=self._disagreements.get(layer),
            fallback=self._builders.fallbacks.get(layer),
        )  # fmt: skip

    async def fetched(self, layer: LayerRef) -> int:
        """Bytes of the layer whose content is in the cache now (``fetched_share.py``)."""
        index = self.known_index(layer)
        candidates = [] if index else [self._files.whole(layer), self._usable_toc(layer)]
        return await fetched_bytes(layer.descriptor.size or 0, index, candidates, self.pieces)

    def close(self) -> None:
        self._indexes.close()
        self._builders.close()
        if self.recorder is not None:
            self.recorder.close()
