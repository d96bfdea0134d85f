"""The on-disk chunk cache: content-addressed, verified on every load, bounded, LRU.

Cache layer: imports nothing from regfs above it. Methods are synchronous and
thread-safe; callers run them in worker threads.

- A chunk is stored under the hex of its sha256 (``chunks/ab/abcd…``); identical chunks
  of different layers are stored once.
- Writes go to a ``.tmp`` file that is renamed into place, so a reader (or a second
  mount sharing the directory) never sees a partial chunk; every load re-hashes the
  bytes, so even a torn write after a power loss is never served.
- Recency is the file's mtime, touched on each load: shared by every mount using the
  directory. A chunk deleted while another mount reads it is simply fetched again.
- ``max_bytes`` bounds the whole cache dir: chunks, layer indexes (``indexes/``, whose
  recency the layer store touches on open), blobs being indexed (``tmp/``), and the last
  answers and confirmations (``answers/``, ``confirmed/``: their writers count them with
  ``count_written``). Over it, the least recently used chunks, indexes not in use here,
  answers and confirmations are deleted until the total is under 90 % of it. Blobs in
  ``tmp/`` count but are never evicted: a download in progress is bounded by the layer
  store instead (a few at once). An index deleted under another mount stays readable to
  it (an open file); one that mount had closed is built again when next queried
  (``layers/index_rebuilds.py``).
  Several processes may share the dir: each measures it again once it has counted a
  tenth of the bound, so together they overshoot it by at most that much each.
  Evicting indexes sweeps the records of which images used their layers
  (``cache/layer_images.py``) with them.
- Pinned chunks, indexes, and the answers and confirmations a pinned image is shown
  through while its registry is away (``cache/pins.py``) count but are never evicted;
  eviction holds the pins' lock from reading them to its last deletion (``pins.py`` says
  why that keeps a pin being recorded meanwhile whole).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from regfs.cache import layer_images
from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import PINNED_SHARE, Protection, room_for_pins
from regfs.cache.pins import Pins
from regfs.cache.temporaries import is_abandoned

log = logging.getLogger(__name__)

LOW_WATER = 0.9
MEASURED_AGAIN_AFTER = 0.1
"""Share of the bound this process may count as written before it measures the cache dir
again: other mounts and ``regfs prefetch`` on the same dir write too, and a count of its
own writes alone let N processes fill N times the bound."""


class ChunkCache:
    def __init__(
        self,
        layout: CacheLayout,
        max_bytes: int,
        in_use: Callable[[], Collection[Path]] = frozenset,
    ) -> None:
        """``in_use`` names the index files this process has open (never evicted)."""
        self._layout = layout
        self.directory = layout.chunks
        self.directory.mkdir(parents=True, exist_ok=True)
        self._indexes = layout.indexes
        self._temporary = layout.temporary
        self.max_bytes = max_bytes
        self._in_use = in_use
        self._lock = threading.Lock()
        self._usage: int | None = None  # of the whole cache dir, measured on first need
        self._counted_since_measured = 0
        self.pins = Pins(layout)
        self._pins_overflow_told = False

    def _path(self, sha256: bytes) -> Path:
        name = sha256.hex()
        return self.directory / name[:2] / name

    def load(self, sha256: bytes) -> bytes | None:
        """The bytes stored under this hash, or None if absent or unreadable. Not checked:
        ``layers.pieces`` checks what it takes from here (and ``discard``s a damaged one)."""
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
        with contextlib.suppress(FileNotFoundError):  # evicted by another mount: bytes are good
            os.utime(path)
        return data

    def discard(self, sha256: bytes) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def has(self, sha256: bytes) -> bool:
        """True if a chunk of this hash is stored (not checked)."""
        return self._path(sha256).exists()

    def path_of(self, sha256: bytes) -> Path:
        """Where a chunk of this hash is (or would be) stored."""
        return self._path(sha256)

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
        self._count(len(data), incoming=True)  # room first: the dir never exceeds the bound
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with _created(temporary) as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def usage(self) -> int:
        """Bytes in the whole cache dir (chunks, indexes, blobs being indexed)."""
        with self._lock:
            if self._usage is not None:
                return self._usage
        return self._measure(incoming=0)

    def count_written(self, size: int) -> None:
        """A small record was written elsewhere in the cache dir (``answers/``,
        ``confirmed/``), maybe on the event loop: counted, evicted for by the next write
        that evicts (``_count``), never here."""
        with self._lock:
            if self._usage is not None:
                self._usage += size
                self._counted_since_measured += size

    def note_growth(self, size: int) -> None:
        """Another part of the cache dir grew (an index published, a blob downloading):
        count it, and evict if that took the total over the bound."""
        self._count(size, incoming=False)

    def _count(self, size: int, *, incoming: bool) -> None:
        """Add ``size`` to the usage; over the bound, evict (making room for ``size`` more
        bytes if they are ``incoming``: not written yet). The usage is measured again,
        with what other processes wrote, once this one has counted a tenth of the bound."""
        with self._lock:
            measured = (self._usage is not None and self._counted_since_measured
                        < self.max_bytes * MEASURED_AGAIN_AFTER)  # fmt: skip
            if measured:
                assert self._usage is not None
                self._usage += size
                self._counted_since_measured += size
                over = self._usage > self.max_bytes
        if not measured:
            over = self._measure(incoming=size if incoming else 0) > self.max_bytes
        if over:
            self.evict(incoming=size if incoming else 0)

    def _measure(self, incoming: int) -> int:
        """Bytes in the whole cache dir now (what every process wrote), with ``incoming``
        bytes about to be written, remembered."""
        evictable, fixed, _ = self._scan(Protection())
        usage = fixed + sum(size for _, size, _ in evictable) + incoming
        with self._lock:
            self._usage, self._counted_since_measured = usage, incoming
        return usage

    def _scan(self, pinned: Protection) -> tuple[list[tuple[float, int, Path]], int, int]:
        """(mtime, size, path) of every chunk, unused index, answer and confirmation not
        ``pinned``, the bytes of what may not be evicted, and of what of that is pinned;
        removes temporaries left by dead processes."""
        now = time.time()
        evictable = []
        fixed = pinned_bytes = 0
        confirmed = _directories(self._layout.confirmations)
        directories = [*_directories(self.directory), self._indexes, self._temporary,
                       self._layout.answers, *confirmed]  # fmt: skip
        in_use = set(self._in_use())
        for directory in directories:
            for path, stat in _files(directory):
                if path.name.startswith(".") and is_abandoned(path, stat.st_mtime, now):
                    path.unlink(missing_ok=True)
                elif self._pinned(pinned, path, directory):
                    fixed += stat.st_size
                    pinned_bytes += stat.st_size
                elif path.name.startswith(".") or directory == self._temporary or path in in_use:
                    fixed += stat.st_size
                else:
                    evictable.append((stat.st_mtime, stat.st_size, path))
        return evictable, fixed, pinned_bytes

    def _pinned(self, pinned: Protection, path: Path, directory: Path) -> bool:
        """True if a pin keeps ``path``, a file of ``directory``."""
        if directory == self._indexes:
            return pinned.keeps_index_file(path.name)
        if directory == self._layout.answers:
            return path.name in pinned.answers
        if directory.parent == self._layout.confirmations:
            return f"{directory.name}/{path.name}" in pinned.confirmations
        return pinned.keeps_chunk(path.name)

    def evict(self, incoming: int = 0) -> None:
        """Delete the least recently used chunks and indexes until the whole cache dir,
        with ``incoming`` bytes about to be written, is under the low-water mark."""
        with self._lock, self.pins.held() as pinned:
            evictable, fixed, pinned_bytes = self._scan(pinned)
            usage = incoming + fixed + sum(size for _, size, _ in evictable)
            target = int(self.max_bytes * LOW_WATER)
            indexes_evicted = False
            for _, size, path in sorted(evictable):
                if usage <= target:
                    break
                path.unlink(missing_ok=True)
                usage -= size
                indexes_evicted |= path.parent == self._indexes
            self._usage, self._counted_since_measured = usage, incoming
        if pinned_bytes > room_for_pins(self.max_bytes) and not self._pins_overflow_told:
            self._pins_overflow_told = True  # the pins were made for a larger --cache-size
            log.warning("cache dir %s: pins hold %d bytes, more than %d%% of --cache-size %d: "
                        "little room is left to evict from (regfs cache stats lists the pins)",
                        self._layout.root, pinned_bytes, round(100 * PINNED_SHARE),
                        self.max_bytes)  # fmt: skip
        if indexes_evicted:
            layer_images.sweep(self._layout)


def _created(path: Path) -> BinaryIO:
    """``path`` opened for writing; its bucket dir made only when missing (a miss may write
    hundreds of chunks: a mkdir each cost a fifth of their time)."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(exist_ok=True)
        return open(path, "wb")


def load_verified(chunks: ChunkCache, sha256: bytes) -> bytes | None:
    """The chunk named ``sha256`` from the disk cache, if it is there and intact (a damaged
    one is removed, to be fetched again). Blocking."""
    data = chunks.load(sha256)
    if data is None:
        return None
    if hashlib.sha256(data).digest() != sha256:
        log.warning("chunk %s in the cache is damaged: removed, will fetch again", sha256.hex())
        chunks.discard(sha256)
        return None
    return data


def _directories(parent: Path) -> list[Path]:
    """The directories directly in ``parent`` (none if it is missing)."""
    try:
        return [Path(entry.path) for entry in os.scandir(parent) if entry.is_dir()]
    except FileNotFoundError:
        return []


def _files(directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files directly in ``directory`` with their stat (vanished ones skipped)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
