"""The pins of a cache dir: one file each in ``pins/``, honoured by every process's eviction.

Cache layer: imports nothing from regfs above it. What a pin holds and the fits rule are
``pin_records.py``; here they are kept on disk, where every mount, ``regfs prefetch`` and
``regfs cache`` sharing the dir reads them, so they hold across processes and restarts.

- ``pins/<sha256 of the reference, 40 hex>.json``: one per pinned reference, written
  whole (``.tmp`` → fsync → rename); a file that does not read back as a pin is ignored,
  with one warning.
- ``pins/.lock``: eviction (and ``cache prune --image``) reads the pins and deletes files
  holding it shared (``flock``); a pin is written holding it exclusively, and the fits
  rule is checked against the other pins under that lock, so two pins made at once
  cannot both take the last room.

Why a pin never loses what it names to an eviction running meanwhile, in any process:
a pin is recorded *before* what it protects is made sure of. ``regfs prefetch --pin``
records the image's layers by digest before it fetches any (so their index files are
protected as soon as they exist), and each layer's pieces as soon as its index names them,
before it loads or fetches them; ``regfs cache pin`` records what is already there. An
eviction holds the lock from reading the pins to its last deletion, so it either saw a
record, or was done before the record was written, and then whatever it deleted is loaded
(fetched again) after the record exists. What a finished pin names is never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator

from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import (
    MAX_PIN_BYTES,
    Pin,
    Protection,
    check_fits,
    decoded,
    encoded,
    file_name,
    protection,
)
from regfs.cache.temporaries import write_atomically

log = logging.getLogger(__name__)


class Pins:
    def __init__(self, layout: CacheLayout) -> None:
        self.directory = layout.pins
        self._parsed: dict[str, tuple[tuple[int, int], Pin | None]] = {}
        """File name → ((mtime_ns, size), its pin): a file read once while it is unchanged."""
        self._parsed_lock = threading.Lock()  # evictions run in worker threads

    def all(self) -> list[Pin]:
        """Every pin recorded, by reference. Blocking (small reads, once per change)."""
        try:
            entries = [
                entry
                for entry in os.scandir(self.directory)
                if entry.name.endswith(".json") and not entry.name.startswith(".")
            ]
        except FileNotFoundError:
            return []
        pins = []
        with self._parsed_lock:
            for entry in entries:
                pin = self._read(entry)
                if pin is not None:
                    pins.append(pin)
            names = {entry.name for entry in entries}
            self._parsed = {name: read for name, read in self._parsed.items() if name in names}
        return sorted(pins, key=lambda pin: pin.reference)

    def _read(self, entry: os.DirEntry[str]) -> Pin | None:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        state = (info.st_mtime_ns, info.st_size)
        known = self._parsed.get(entry.name)
        if known is not None and known[0] == state:
            return known[1]
        try:
            with open(entry.path, "rb") as file:
                pin = decoded(file.read(MAX_PIN_BYTES + 1))
        except FileNotFoundError:  # unpinned meanwhile
            return None
        except OSError as error:
            log.warning("pin %s unreadable (%s): what it pinned may be evicted",
                        entry.path, error.strerror or error)  # fmt: skip
            pin = None
        else:
            if pin is None or file_name(pin.reference) != entry.name:
                log.warning("pin %s is not a pin regfs wrote: ignored", entry.path)
                pin = None
        self._parsed[entry.name] = (state, pin)
        return pin

    def get(self, reference: str) -> Pin | None:
        return next((pin for pin in self.all() if pin.reference == reference), None)

    @contextlib.contextmanager
    def held(self) -> Iterator[Protection]:
        """What the pins protect, kept so (no pin written) until the block ends: delete
        files only inside it. Blocking (waits for a pin being written)."""
        with self._locked(fcntl.LOCK_SH):
            yield protection(self.all())

    def save(self, pin: Pin, *, cache_size: int | None) -> None:
        """Record ``pin`` (in place of its reference's earlier one); with ``cache_size``,
        only if it fits beside the other pins (else ``PinTooLarge``). Blocking."""
        with self._locked(fcntl.LOCK_EX):
            if cache_size is not None:
                check_fits(pin, self.all(), cache_size)
            write_atomically(self.directory / file_name(pin.reference), encoded(pin))

    def remove(self, reference: str) -> None:
        with self._locked(fcntl.LOCK_EX):
            (self.directory / file_name(reference)).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, how)
            yield
        finally:
            os.close(descriptor)
