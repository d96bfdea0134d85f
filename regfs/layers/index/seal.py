"""The seal of a layer index file: the sha256 of its SQLite pages, appended to them.

Layers layer, blocking (a worker thread or a command). Chunks are checked against their
digests when read, but the index says which verified bytes make which file: a bit flipped
on disk in a row that still parses would map a file onto other bytes of its layer, or
give it a wrong size or mode, and nothing would notice. So ``write.py`` seals each file
before publishing it, and ``index_file.py`` checks the seal on every first open.

The seal is a trailer (``MAGIC`` and the digest) after the last page, in the same file:
renamed into place with its pages, it can never be paired with another file's. SQLite
reads a file by the page count in its header and ignores the trailer. A file without one
(written by a regfs before seals, of the same schema) is used as it is, unchecked: it
cannot be told from a damaged one otherwise, and building it again would need a blob an
offline cache may not have.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

MAGIC = b"regfsIX1"
TRAILER_SIZE = len(MAGIC) + hashlib.sha256().digest_size
_BLOCK = 1 << 20


class BrokenSeal(ValueError):
    """The file's size or digest is not what its pages and seal say."""


def seal(path: Path) -> None:
    """Append the seal to the SQLite file at ``path`` (whole, closed) and sync it."""
    with open(path, "r+b") as file:
        digest = _digest_of(file, os.fstat(file.fileno()).st_size)
        file.write(MAGIC + digest)
        file.flush()
        os.fsync(file.fileno())


def check_seal(path: Path, pages_size: int) -> bytes | None:
    """The seal of the file at ``path`` (the sha256 of its pages), checked against its
    ``pages_size`` bytes of pages; None if it has no seal (an older regfs's file, exactly
    its pages). Raise ``BrokenSeal`` otherwise (cut, grown, or any byte changed),
    ``OSError`` if it cannot be read."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size == pages_size:
            return None
        if size != pages_size + TRAILER_SIZE:
            raise BrokenSeal(f"{size} bytes, neither its pages ({pages_size}) nor them sealed")
        digest = _digest_of(file, pages_size)
        sealed = _sealed_digest(file.read(TRAILER_SIZE))
    if sealed is None:
        raise BrokenSeal("its trailer is not a seal")
    if sealed != digest:
        raise BrokenSeal("its pages do not match its seal")
    return digest


def written_seal(path: Path) -> bytes | None:
    """The seal this process wrote at the end of the file at ``path`` (not checked
    again), or None if it has none."""
    with open(path, "rb") as file:
        file.seek(-TRAILER_SIZE, os.SEEK_END)
        return _sealed_digest(file.read(TRAILER_SIZE))


def _sealed_digest(trailer: bytes) -> bytes | None:
    """The digest a trailer holds, or None if it is not a seal."""
    return trailer[len(MAGIC) :] if trailer.startswith(MAGIC) else None


def _digest_of(file: BinaryIO, size: int) -> bytes:
    """The sha256 of the first ``size`` bytes of ``file``, read from its start."""
    file.seek(0)
    hasher = hashlib.sha256()
    left = size
    while left:
        block = file.read(min(_BLOCK, left))
        if not block:
            raise BrokenSeal(f"{size - left} bytes, not its {size}")
        hasher.update(block)
        left -= len(block)
    return hasher.digest()
