"""Fetching what a container's start will read, ahead of its reads, which come one
after another, each miss a round trip.

Layers layer. Two sources say what a start reads:

- for a layer store's client (podman, CRI-O), the files every Linux container's start
  reads (``formats/start_files.py``), fetched from each layer as soon as it is indexed
  (``for_runtime``);
- for any image, its start record (``domain/start_record.py``), found among its
  referrers (the referrers API, or its fallback tag) once per image and mount, when its
  merged tree (``rootfs/``), a layer dir or its layer store entry is first used, never
  by a listing of the image dir: ``ls TAG/`` stays free of extra requests
  (``recorded_soon``). Its newest record is read by digest, and each path it names is
  fetched from the layer that provides it in the merged tree (the topmost that holds a
  file there): layer by layer from the top, each as soon as its index is ready.

Either way each layer's files go at once (``LayerReads.prefetch_files``). A registry that
cannot be reached or refuses the question, or an image without a record, costs nothing
more: the files are fetched when read, as any other. A record that does not parse is said
once in the log and not used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError
from regfs.domain.manifest import ImageManifest, verified_manifest
from regfs.domain.start_record import (
    MAX_RECORD_BYTES,
    START_RECORD,
    parse_record,
    record_blob,
    start_records_among,
)
from regfs.layers.background import BackgroundWork
from regfs.layers.by_digest import ByDigest
from regfs.layers.formats.start_files import claimed_by
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)

RECORDED = ", as its start record names"
"""How the log says why a layer's files were fetched ahead, for a start record."""
IndexOf = Callable[[LayerRef], Awaitable[LayerIndex]]


class Prefetch(Protocol):
    def __call__(
        self, layer: LayerRef, index: LayerIndex, paths: Sequence[bytes], *, why: str = ""
    ) -> None: ...


class StartReads:
    def __init__(
        self,
        client: RegistryClient,
        by_digest: ByDigest,
        background: BackgroundWork,
        *,
        index: IndexOf,
        prefetch: Prefetch,
        indexing: trio.CapacityLimiter,
    ) -> None:
        """``index``: a layer's index, built if need be; ``prefetch``: begin fetching the
        files at the given paths of an indexed layer; ``indexing``: the slots of layers
        indexed ahead of use."""
        self._client = client
        self._by_digest = by_digest
        self._background = background
        self._index = index
        self._prefetch = prefetch
        self._indexing = indexing

    def for_runtime(self, layers: Sequence[LayerRef], files: Sequence[bytes]) -> None:
        """Index ``layers`` in the background, in this order, and fetch ahead what
        ``files`` each holds: a layer store's client is about to start a container, which
        reads them first thing."""

        async def index_then_fetch(layer: LayerRef) -> None:
            self._prefetch(layer, await self._index(layer), files)

        self._background.start_in_turn(
            "indexing for a start", layers, index_then_fetch, self._indexing
        )

    def recorded_soon(self, layers: Sequence[LayerRef]) -> None:
        """Look for the start record of the image ``layers`` (bottom first) make up, and
        fetch what it names, in the background; once per image and mount."""
        if not layers or (image := layers[-1].image) is None:
            return
        top = layers[-1]
        name = f"{top.host}/{top.repository}@{image}"

        async def fetch() -> None:
            await self._fetch(name, top.host, top.repository, image, layers)

        self._background.start_once("start record", name, fetch, key=(top.host, image))

    async def _fetch(
        self, name: str, host: str, repository: str, image: Digest, layers: Sequence[LayerRef]
    ) -> None:
        paths = await self._record_of(name, host, repository, image)
        for layer in reversed(layers):
            if not paths:
                break
            index = await self._index(layer)
            claimed, paths = claimed_by(index, paths)
            if claimed:
                self._prefetch(layer, index, claimed, why=RECORDED)

    async def _record_of(
        self, name: str, host: str, repository: str, image: Digest
    ) -> tuple[bytes, ...]:
        """The paths of the image's newest start record; none if it has none, or if the
        registry does not say (unreachable, refusing, no such API)."""
        try:
            referrers = await self._client.referrers(host, repository, image, START_RECORD)
        except RegfsError as error:
            log.info("%s: start record not looked up (%s)", name, error)
            return ()
        records = start_records_among(referrers) if referrers is not None else []
        if not records:
            return ()
        record = records[0].digest
        what = f"{host}/{repository}@{record}"
        try:
            raw, media_type = await self._by_digest.manifest(host, repository, record)
            manifest = verified_manifest(raw, media_type, record)
            if not isinstance(manifest, ImageManifest):
                raise MalformedContent(f"{what}: a start record must be an image manifest")
            blob = record_blob(manifest, what)
            data = await self._by_digest.blob(
                host, repository, blob.digest, size=blob.size, max_bytes=MAX_RECORD_BYTES,
                what="start record",
            )  # fmt: skip
            paths = parse_record(data, what)
        except MalformedContent as error:
            log.warning("%s: start record not used (%s)", name, error)
            return ()
        except RegfsError as error:
            log.info("%s: start record %s not read (%s)", name, record, error)
            return ()
        log.info("%s: start record %s names %d files: fetching them", name, record, len(paths))
        return paths
