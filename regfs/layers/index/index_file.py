"""Opening a layer index file: read-only, checked to be whole and as sealed (``seal.py``),
of this schema and, when asked, of the expected layer.

Layers layer. A file that cannot serve (damaged, cut short, its seal broken, a directory
in its place, written by a regfs of another schema, another layer's) is deleted with one
log line and taken as absent, so the caller indexes its layer again: left in place, it
made its layer EIO in every mount until deleted by hand. A file that cannot be opened now
(no descriptor left) is kept. ``layer_index.py`` asks its queries of what this opens.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from regfs.layers.index.meta import SCHEMA_VERSION, ExpectedIndex, IndexMeta
from regfs.layers.index.seal import check_seal

log = logging.getLogger(__name__)

PAGE_CACHE_KIB = 256
"""SQLite's page cache per open index (its default is 2 MiB): the files are in the kernel's
page cache anyway, and a mount keeps up to ``OPEN_INDEXES`` of them open."""


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False
    )
    connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
    return connection


@dataclass(frozen=True, slots=True)
class IndexFile:
    """An index file opened and checked."""

    connection: sqlite3.Connection
    meta: IndexMeta
    seal: bytes | None
    """The sha256 of its pages (``seal.py``); None for an older regfs's file."""


def opened(path: Path, expected: ExpectedIndex | None) -> IndexFile | None:
    """The file, opened and checked, or None if it is absent or cannot serve (then
    deleted, but for one that cannot be opened now)."""
    if not path.exists():
        return None
    try:
        connection = connect(path)
    except sqlite3.OperationalError as error:  # not now (a directory, no descriptor)
        log.warning("%s: layer index cannot be opened (%s)", path.name, error)
        if path.is_dir():
            _discard(path, "layer index a directory")
        return None
    except sqlite3.DatabaseError as error:  # not a database, malformed
        _discard(path, f"layer index unreadable ({error})")
        return None
    try:
        values = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        if values.get("schema_version") != str(SCHEMA_VERSION):  # an older regfs's
            connection.close()
            version = values.get("schema_version")
            _discard(path, f"layer index of schema {version}, not {SCHEMA_VERSION}",
                     logging.INFO)  # fmt: skip
            return None
        meta = IndexMeta(
            values["digest"], values["compression"], int(values["compressed_size"]),
            int(values["uncompressed_size"]), int(values["chunk_size"]),
            int(values["prefetch_end"]), values["built_from"],
        )  # fmt: skip
        seal = _check_whole(connection, path)
    except (sqlite3.Error, KeyError, ValueError, OSError) as error:
        connection.close()
        _discard(path, f"layer index unreadable ({error})")
        return None
    mismatch = expected.mismatch(meta) if expected is not None else None
    if mismatch is not None:
        connection.close()
        _discard(path, f"not the index of {expected and expected.digest} ({mismatch})")
        return None
    return IndexFile(connection, meta, seal)


def _check_whole(connection: sqlite3.Connection, path: Path) -> bytes | None:
    """The file's seal (None if it has none). Raise ``ValueError`` unless the file holds
    exactly its pages and their seal (or its pages alone, unsealed, from an older regfs):
    a file cut short within a page opens and reads its first rows, then fails queries in
    odd ways, and a changed byte in a row that still parses would serve a file from the
    wrong bytes (``seal.py``)."""
    (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    (pages,) = connection.execute("PRAGMA page_count").fetchone()
    return check_seal(path, page_size * pages)


def _discard(path: Path, why: str, level: int = logging.WARNING) -> None:
    """Delete an index file that cannot serve (a directory in its place too): its layer is
    indexed again."""
    log.log(level, "%s: %s: deleted, built again", path.name, why)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as error:
        log.warning("%s: could not be deleted (%s)", path.name, error)
