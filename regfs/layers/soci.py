"""Finding the SOCI zTOC of a layer: the image's v2 annotation, else (when allowed) a v1
referrer.

Layers layer. Asked once per image and mount, when a layer of it is first indexed (never
by a listing: ``ls`` of an image stays free of extra requests). As soci-snapshotter does,
the first SOCI v1 index in the referrers list is used. A registry that does not answer
(down, timing out) is asked again next time; any other failure (a refusal, a malformed
index) means "no SOCI index" for the mount, with one log line.

Trust: a SOCI v2 index is named by the image manifest's annotation, so its zTOCs are
covered by the image's digest. A v1 index is found by a lookup: anyone who may push to the
repository may add one, and what its zTOC says about the spans (names, offsets, inflation
windows) is covered by no digest the user asked for. So v1 referrers are not even looked
for unless the user allows them (``--soci-v1-referrers``, as soci-snapshotter 0.10 turned
v1 off by default); ``user.regfs.access`` says which kind a layer is read through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from regfs.cache.answers import KeptAnswer, KeptAnswers, v1_index_question
from regfs.cache.flight import SingleFlight
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent, RegfsError, Unavailable
from regfs.domain.manifest import Descriptor, ImageManifest, verified_manifest
from regfs.domain.soci import SOCI_INDEX_V1, soci_indexes_among, ztocs_by_layer
from regfs.layers.by_digest import ByDigest
from regfs.layers.layer_ref import LayerRef
from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)
_NAMED = "named by the image manifest"
_REFERRER = "a referrer, allowed by --soci-v1-referrers: not covered by the image digest"


@dataclass(frozen=True, slots=True)
class SociIndex:
    """The zTOCs of one image's layers, and how the index was found."""

    digest: Digest
    ztocs: dict[Digest, Descriptor]
    named_by_image: bool
    """True for SOCI v2 (the image manifest names it), False for a v1 referrer."""

    def source_of(self, layer: Digest) -> str:
        """Which zTOC a layer is read through and how it was found (``user.regfs.access``)."""
        ztoc = self.ztocs[layer].digest
        if self.named_by_image:
            return f"SOCI v2 zTOC {ztoc} ({_NAMED})"
        return f"SOCI v1 zTOC {ztoc} ({_REFERRER})"


class SociLookup:
    def __init__(
        self,
        client: RegistryClient,
        by_digest: ByDigest,
        answers: KeptAnswers,
        *,
        v1_referrers: bool,
    ) -> None:
        """``v1_referrers``: look for a SOCI v1 index among the referrers of an image
        whose manifest names none (else no referrers request is ever made); the last one
        found is kept in ``answers``, for when the registry cannot be reached."""
        self._client = client
        self._by_digest = by_digest
        self._answers = answers
        self.v1_referrers = v1_referrers
        self._found: dict[tuple[str, str, Digest], SociIndex | None] = {}
        self._flight: SingleFlight[SociIndex | None] = SingleFlight()

    async def index_for(
        self, host: str, repository: str, image: Digest, named: Digest | None
    ) -> SociIndex | None:
        """The SOCI index of image manifest ``image`` (``named`` by its v2 annotation, if
        it has one), or None."""
        key = (host, repository, image)
        if key in self._found:
            return self._found[key]

        async def look() -> SociIndex | None:
            where = f"{host}/{repository}@{image}"
            try:
                found = await self._look(host, repository, image, named)
            except Unavailable as error:
                log.info("%s: SOCI index not looked up (%s)", where, error)
                return None
            except RegfsError as error:
                log.warning("%s: SOCI index not used (%s)", where, error)
                found = None
            if found is not None:
                how = _NAMED if found.named_by_image else _REFERRER
                log.info("%s: SOCI index %s (%s)", where, found.digest, how)
            self._found[key] = found
            return found

        return await self._flight.run(key, look)

    async def ztoc_of(self, layer: LayerRef) -> Descriptor | None:
        """The zTOC of a gzip layer in its image's SOCI index, if it has one."""
        if layer.image is None or not layer.descriptor.media_type.endswith("gzip"):
            return None
        found = await self.index_for(layer.host, layer.repository, layer.image, layer.soci_index)
        return found.ztocs.get(layer.digest) if found is not None else None

    def source_of(self, host: str, repository: str, image: Digest | None, layer: Digest) -> str:
        """How a layer of ``image`` whose index was built from a zTOC of this lookup's
        found it (see ``SociIndex.source_of``)."""
        found = self._found.get((host, repository, image)) if image is not None else None
        if found is None or layer not in found.ztocs:
            return "SOCI zTOC"  # not reached: an index from a zTOC had its lookup first
        return found.source_of(layer)

    async def _look(
        self, host: str, repository: str, image: Digest, named: Digest | None
    ) -> SociIndex | None:
        digest = named
        if digest is None:
            if not self.v1_referrers:
                return None  # not even asked: a v1 index is covered by no digest asked for
            digest = await self._v1_index(host, repository, image)
            if digest is None:
                return None
        raw, media_type = await self._by_digest.manifest(host, repository, digest)
        what = f"{host}/{repository}@{digest}"
        manifest = verified_manifest(raw, media_type, digest)
        if not isinstance(manifest, ImageManifest):
            raise MalformedContent(f"{what}: a SOCI index must be an image manifest")
        return SociIndex(digest, ztocs_by_layer(manifest, what), named_by_image=named is not None)

    async def _v1_index(self, host: str, repository: str, image: Digest) -> Digest | None:
        """The first SOCI v1 index among the image's referrers; while the registry cannot
        be reached, the one found last time (the index itself is then read by digest)."""

        async def ask() -> str | None:
            referrers = await self._client.referrers(host, repository, image, SOCI_INDEX_V1)
            found = soci_indexes_among(referrers) if referrers is not None else []
            return str(found[0]) if found else None

        question = v1_index_question(host, repository, image)
        kept = self._answers.load(question)
        asked = await self._by_digest.reach.ask(host, ask, kept)
        if isinstance(asked, KeptAnswer):
            found = asked.answer
        else:
            found = asked
            self._answers.save(question, found)
        return Digest.parse(found) if isinstance(found, str) else None
