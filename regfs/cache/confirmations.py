"""Which repositories a registry said hold which digests, kept across mounts.

Cache layer: imports nothing from regfs above it but the domain. Content is shared by
digest in the cache dir, but it belongs to repositories: a mount shows a cached manifest,
config or layer under a repository only once that repository's registry served it or
confirmed it (a HEAD). The confirmation is kept here so that a later mount can still show
it while the registry cannot be reached (``regfs.cache.reachability``); when the registry
answers, it is asked again, and a refusal or "unknown" revokes the confirmation.

- one small file per (host, repository, digest):
  ``confirmed/<sha256 of host/repository, 32 hex>/<algorithm>-<hex>``, JSON naming all three
  (read back only if they match) and, for a manifest, its media type;
- when: the file's mtime, renewed when confirmed again (at most every ``RENEW_AFTER``
  seconds, so a busy mount does not write on every lookup);
- written atomically; best effort: a full disk only means the registry is asked next time.
- counted against ``--cache-size`` and evicted least recently used first with the chunks
  (``chunks.py``; ``answers.py`` says why one bound): the mtime is the last confirmation,
  renewed while in use. An evicted confirmation costs one HEAD when the registry answers;
  those of pinned images are kept, since without them a pinned image could not be shown
  while its registry is away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import write_atomically
from regfs.domain.digest import Digest

log = logging.getLogger(__name__)

RENEW_AFTER = 3600.0
MAX_RECORD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Confirmation:
    at: float
    """When the registry last served or confirmed the digest in the repository (epoch s)."""
    media_type: str | None = None
    """For a manifest: the media type it was served with."""


def file_name(host: str, repository: str, digest: Digest) -> str:
    """The file of ``confirmed/`` that keeps this confirmation, relative to it."""
    owner = hashlib.sha256(f"{host}/{repository}".encode()).hexdigest()[:32]
    return f"{owner}/{digest.dir_name}"


class Confirmations:
    def __init__(self, layout: CacheLayout, grew: Callable[[int], None] | None = None) -> None:
        """``grew`` counts the bytes of each record written (``ChunkCache.count_written``;
        None where no cache bound is kept: ``regfs cache`` reading, tests)."""
        self._directory = layout.confirmations
        self._grew = grew

    def _path(self, host: str, repository: str, digest: Digest) -> Path:
        return self._directory / file_name(host, repository, digest)

    def get(self, host: str, repository: str, digest: Digest) -> Confirmation | None:
        """The kept confirmation, or None (absent, or a file that does not name all three).
        Blocking (a small read)."""
        path = self._path(host, repository, digest)
        try:
            with open(path, "rb") as file:
                record = json.loads(file.read(MAX_RECORD_BYTES))
                at = os.fstat(file.fileno()).st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.info("confirmation %s unreadable (%s): the registry will be asked", path, error)
            return None
        if not isinstance(record, dict) or record.get("name") != _name(host, repository, digest):
            return None
        media_type = record.get("media_type")
        return Confirmation(at, media_type if isinstance(media_type, str) else None)

    def add(
        self, host: str, repository: str, digest: Digest, *, media_type: str | None = None
    ) -> None:
        """Keep (or renew) that the registry served or confirmed ``digest`` in
        ``repository`` now. Blocking; never raises OSError."""
        kept = self.get(host, repository, digest)
        path = self._path(host, repository, digest)
        try:
            if kept is not None and kept.media_type == media_type:
                if time.time() - kept.at > RENEW_AFTER:
                    os.utime(path)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"name": _name(host, repository, digest), "media_type": media_type}
            data = json.dumps(record).encode()
            write_atomically(path, data, durable=False)
            if self._grew is not None:
                self._grew(len(data))
        except OSError as error:
            log.info("confirmation of %s not kept: %s", _name(host, repository, digest), error)

    def revoke(self, host: str, repository: str, digest: Digest) -> None:
        """The registry, reachable, refused the digest or does not know it (any more)."""
        with contextlib.suppress(OSError):
            self._path(host, repository, digest).unlink(missing_ok=True)


def _name(host: str, repository: str, digest: Digest) -> str:
    return f"{host}/{repository}@{digest}"
