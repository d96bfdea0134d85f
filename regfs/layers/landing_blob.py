"""A layer blob read while it still downloads: the first pass indexes a layer as its bytes
land, and sees the blob's end only once the whole blob has matched its digest.

Layers layer, blocking on the reader's side (a worker thread). The writer
(``VerifyingSink``) says how many bytes the file holds; a reader waits for those it asks
for. A read past them shows the end only after ``complete``, which the builder calls once
the blob was verified, and the first pass waits for that (``wait_verified``) before it
writes the index: no index is written from bytes the digest has not vouched for yet.
After ``abandon`` (the download failed, or started over at a mirror) every wait raises
``BlobAbandoned``. A seek to the end answers the size the descriptor gives, at once:
indexed_gzip asks for it before it reads anything.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class BlobAbandoned(Exception):
    """The download a reader followed failed or started over: what it built is dropped."""


class LandingBlob:
    """The state of one blob file being written: bytes landed, and how it ended."""

    def __init__(self, path: Path, size: int | None, landed: int = 0) -> None:
        """``size``: what the descriptor says the blob holds (None: learnt at its end);
        ``landed``: bytes the file holds already (a download cut off, going on)."""
        self.path = path
        self.size = size
        self._changed = threading.Condition()
        self._landed = landed
        self._ended: bool | None = None
        """None while the blob downloads; True once complete and verified; False: abandoned."""

    def landed(self, size: int) -> None:
        """The file now holds ``size`` bytes (flushed to it)."""
        with self._changed:
            self._landed = size
            self._changed.notify_all()

    def complete(self) -> None:
        """The whole blob is in the file and matched its digest: readers may see its end."""
        self._end(True)

    def abandon(self) -> None:
        """The bytes readers saw will not become a verified blob: every wait raises."""
        self._end(False)

    def _end(self, complete: bool) -> None:
        with self._changed:
            if self._ended is None:
                self._ended = complete
            self._changed.notify_all()

    @property
    def abandoned(self) -> bool:
        return self._ended is False

    def wait_for(self, end: int | None) -> int:
        """How far the file can be read towards ``end`` (None: its end), once the bytes
        before ``end`` have landed or the blob is complete."""
        with self._changed:
            while self._ended is None and (end is None or self._landed < end):
                self._changed.wait()
            if self._ended is False:
                raise BlobAbandoned(f"{self.path.name}: its download was abandoned")
            return self._landed if end is None else min(end, self._landed)

    def wait_verified(self) -> None:
        """Return once the whole blob is in and verified; ``BlobAbandoned`` if it never
        will be."""
        self.wait_for(None)

    def open(self) -> LandingReader:
        return LandingReader(self)


class LandingReader(io.RawIOBase):
    """A read-only handle on a ``LandingBlob``'s file that waits for what has not landed."""

    def __init__(self, blob: LandingBlob) -> None:
        super().__init__()
        self._blob = blob
        self._file = open(blob.path, "rb")  # noqa: SIM115 (closed with this reader)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        readable = self._blob.wait_for(self._position + len(view)) - self._position
        if readable <= 0:
            return 0
        count = self._file.readinto(view[:readable])
        self._position += count
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            blob = self._blob
            offset += blob.size if blob.size is not None else blob.wait_for(None)
        elif whence == os.SEEK_CUR:
            offset += self._position
        if offset < 0:
            raise OSError(f"seek to {offset}")
        self._position = self._file.seek(offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._file.close()
        super().close()
