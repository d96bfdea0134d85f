"""Whole-blob downloads cut off (a link down longer than ``--timeout``), kept in ``tmp/``
so that the next read of their layer goes on from where they stopped.

Layers layer. Bookkeeping only: which file holds how much of which layer's blob, and the
hash of those bytes (``HashedPrefix``); the builder (``builders.py``) does the file work.
A kept file stays named ``<hex>.<pid>.<token>`` and counted in the cache's usage; it is
never read before the whole blob has matched its digest. Kept files are bounded: at most
``MAX_KEPT``, each forgotten once it waited ``KEPT_SECONDS`` (checked whenever one is
kept or taken), all removed when the mount ends, and a killed mount's removed at the next
start with the rest of ``tmp/`` (``cache/temporaries.py``). Another process on the cache
dir knows nothing of them: it downloads the layer itself, and a kept file of a layer
indexed meanwhile is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regfs.layers.blob_sink import HashedPrefix
from regfs.layers.layer_ref import LayerRef

MAX_KEPT = 4
"""Cut downloads kept at once (as many as first passes run at once, ``builders.py``)."""
KEPT_SECONDS = 600.0
"""How long a cut download is kept for a read to resume it; well below the hour after
which another process's start removes a live mount's temporaries as stale."""


@dataclass(frozen=True, slots=True)
class KeptDownload:
    path: Path
    """The blob's file in ``tmp/``, holding its first ``prefix.size`` bytes."""
    prefix: HashedPrefix
    kept_at: float
    """When it was cut off (``time.monotonic``)."""


class KeptDownloads:
    """The downloads cut off in this mount, by layer, oldest first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[LayerRef, KeptDownload] = {}

    def keep(self, layer: LayerRef, path: Path, prefix: HashedPrefix) -> list[KeptDownload]:
        """Keep ``layer``'s cut download; what is no longer kept, to be removed (and
        uncounted) by the caller: the expired, and the oldest beyond ``MAX_KEPT``."""
        dropped = self._expired()
        replaced = self._kept.pop(layer, None)
        if replaced is not None and replaced.path != path:
            dropped.append(replaced)
        self._kept[layer] = KeptDownload(path, prefix, self._clock())
        while len(self._kept) > MAX_KEPT:
            dropped.append(self._kept.pop(next(iter(self._kept))))
        return dropped

    def take(self, layer: LayerRef) -> tuple[KeptDownload | None, list[KeptDownload]]:
        """``layer``'s cut download, no longer kept (the caller goes on with it or
        removes it), if any; and the expired ones, to be removed."""
        dropped = self._expired()
        return self._kept.pop(layer, None), dropped

    def take_all(self) -> list[KeptDownload]:
        """Every kept download, to be removed: the mount ends."""
        kept, self._kept = list(self._kept.values()), {}
        return kept

    def _expired(self) -> list[KeptDownload]:
        now = self._clock()
        expired = [layer for layer, kept in self._kept.items() if now - kept.kept_at > KEPT_SECONDS]
        return [self._kept.pop(layer) for layer in expired]
