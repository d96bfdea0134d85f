"""The on-disk chunk cache: content-addressed, verified on every load, bounded, LRU.

Cache layer: imports nothing from regfs above it. Methods are synchronous and
thread-safe; callers run them in worker threads.

- A chunk is stored under the hex of its sha256 (``chunks/ab/abcd…``); identical chunks
  of different layers are stored once.
- Writes go to a ``.tmp`` file that is renamed into place, so a reader (or a second
  mount sharing the directory) never sees a partial chunk; every load re-hashes the
  bytes, so even a torn write after a power loss is never served.
- Recency is the file's mtime, touched on each load: shared by every mount using the
  directory. When the total exceeds ``max_bytes``, the oldest chunks are deleted until it
  is under 90 % of it. A chunk deleted while another mount reads it is simply fetched
  again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from regfs.cache.temporaries import is_abandoned

log = logging.getLogger(__name__)

LOW_WATER = 0.9


class ChunkCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory / "chunks"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._usage: int | None = None  # measured on first need

    def _path(self, sha256: bytes) -> Path:
        name = sha256.hex()
        return self.directory / name[:2] / name

    def get(self, sha256: bytes) -> bytes | None:
        """The chunk with this hash, or None if absent or damaged (then it is removed)."""
        path = self._path(sha256)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:  # not cached (or evicted): fetch it
            return None
        except OSError as error:  # a damaged cache directory: say so, then fetch again
            log.warning("chunk %s unreadable in the cache (%s): will fetch again",
                        sha256.hex(), error.strerror or error)  # fmt: skip
            return None
        if hashlib.sha256(data).digest() != sha256:
            log.warning("chunk %s in the cache is damaged: removed, will fetch again", sha256.hex())
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted by another mount: bytes are good
            os.utime(path)
        return data

    def put(self, sha256: bytes, data: bytes) -> None:
        """Store a chunk whose hash the caller has checked; best effort, never raises OSError.

        The bytes in hand are verified whatever happens here: a full disk or a chunk
        evicted by another mount at the same moment only means it is fetched again later.
        """
        try:
            self._write(sha256, data)
        except OSError as error:
            log.warning("chunk %s not cached: %s", sha256.hex(), error)

    def _write(self, sha256: bytes, data: bytes) -> None:
        path = self._path(sha256)
        if path.exists():
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)
            return
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        with self._lock:
            if self._usage is not None:
                self._usage += len(data)
            over = self._usage is None or self._usage > self.max_bytes
        if over:
            self.evict()

    def usage(self) -> int:
        with self._lock:
            if self._usage is not None:
                return self._usage
        return sum(size for _, size, _ in self._scan())

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every chunk; removes temporaries left by dead processes."""
        found = []
        now = time.time()
        for bucket in os.scandir(self.directory):
            if not bucket.is_dir():
                continue
            for item in os.scandir(bucket.path):
                try:
                    stat = item.stat()
                except FileNotFoundError:
                    continue
                if item.name.startswith("."):
                    if is_abandoned(Path(item.path), stat.st_mtime, now):
                        Path(item.path).unlink(missing_ok=True)
                    continue
                found.append((stat.st_mtime, stat.st_size, Path(item.path)))
        return found

    def evict(self) -> None:
        """Delete least recently used chunks until usage is under the low-water mark."""
        with self._lock:
            chunks = sorted(self._scan())
            usage = sum(size for _, size, _ in chunks)
            target = int(self.max_bytes * LOW_WATER)
            for _, size, path in chunks:
                if usage <= target:
                    break
                path.unlink(missing_ok=True)
                usage -= size
            self._usage = usage
