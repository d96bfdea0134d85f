"""The per-layer index in SQLite: written once after verification, then read-only.

Layers layer: with ``index_file.py`` (which opens a file, checked) and ``write.py``, the
only user of ``sqlite3``. The schema, with a comment on every column, is ``schema.sql``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import cachetools
import trio

from regfs.cache.memory import keep, listings_lru
from regfs.domain.errors import Evicted, Unavailable
from regfs.layers.formats.entries import ROOT_ID, IndexEntry
from regfs.layers.formats.toc import TocChunk
from regfs.layers.index.index_file import connect, opened
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.meta import ExpectedIndex, IndexKind, IndexMeta
from regfs.layers.index.rows import COLUMNS, entry_of
from regfs.layers.index.seal import written_seal
from regfs.registry.request_deadline import working

T = TypeVar("T")

IndexIdentity = tuple[str, int]
Listings = cachetools.LRUCache[tuple[IndexIdentity, int], list[IndexEntry]]


class LayerIndex:
    """Read access to one published index; cheap queries, safe to share across tasks.

    Its SQLite connection may be closed by its owner (``close``: a mount bounds how many
    index files it keeps open, ``OPEN_INDEXES`` in ``open_indexes.py``) and is opened again on the
    next query, on the event loop, calling ``on_open`` so the owner can count it again.
    The owner must keep the file from being evicted while the object lives (see
    ``OpenIndexes.paths``); another process sharing the cache dir may still evict it
    while it is closed, and its next query then raises ``Evicted`` (with ``rebuild``).
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection | None,
        meta: IndexMeta,
        listings: Listings,
        laid_out: LaidOutIndex | None = None,
        *,
        seal: bytes | None = None,
    ) -> None:
        """``listings`` keeps recent listings (of every index of the mount): an index never
        changes, and `find` and `ls -R` re-read every directory each time. ``laid_out``:
        the index is being written, and answers from memory until ``written``. ``seal``:
        the file's (``seal.py``), for opening it again."""
        self.path = path
        status = None if laid_out else path.stat()
        self.identity: IndexIdentity = (str(path), status.st_ino if status else 0)
        """Names this index among every index of the mount, for caches of its answers:
        entry ids and data offsets are its own (one layer may be indexed from its blob, a
        TOC and a zTOC, each numbering entries its own way), and a file built again at
        the same path is a new file."""
        self._connection: sqlite3.Connection | None = connection
        self._laid_out = laid_out
        self._seal = seal
        self._file = _file_key(status) if status else None
        """The file's inode and change time when last checked: a reopen finding others
        checks the file anew (an inode number is reused once its file is deleted)."""
        self.meta = meta
        self._listings = listings
        self.on_open: Callable[[LayerIndex], None] = lambda index: None
        self.rebuild: Callable[[], Awaitable[None]] | None = None
        """How the owner builds this index's file again, at its path, should another
        process evict it while it is closed (``Evicted``)."""

    @classmethod
    def being_written(cls, laid_out: LaidOutIndex, listings: Listings) -> LayerIndex:
        """The index the builder is writing at ``laid_out.path``, answering from the
        tree in memory (``laid_out`` with its entries) until ``written`` is called."""
        return cls(laid_out.path, None, laid_out.meta, listings, laid_out)

    def written(self) -> None:
        """The file this index answered for from memory is written: answer from it from
        now on (opened on the next query), and let the memory go (unless the file is
        gone already)."""
        with contextlib.suppress(OSError):
            status = self.path.stat()
            self.identity = (str(self.path), status.st_ino)
            self._file = _file_key(status)
            self._seal = written_seal(self.path)
            self._laid_out = None

    @classmethod
    def open(
        cls,
        path: Path,
        listings: Listings | None = None,
        *,
        expected: ExpectedIndex | None = None,
    ) -> LayerIndex | None:
        """The index at ``path``, or None if absent or it cannot serve (``index_file.py``:
        damaged, of another schema, or, with ``expected``, not that layer's; then deleted,
        so that the caller builds it again)."""
        found = opened(path, expected)
        if found is None:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency, for the cache's LRU eviction of whole indexes
        listings = listings if listings is not None else listings_lru()
        try:
            return cls(path, found.connection, found.meta, listings, seal=found.seal)
        except OSError:  # evicted by another process since it was opened
            found.connection.close()
            return None

    def close(self) -> None:
        """Close the connection (a query in a worker thread at that moment starts over)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def _db(self) -> sqlite3.Connection:
        """The connection, opened again if it was closed: onto the file first opened, or
        its twin (the same pages, sealed alike: built again by another process after an
        eviction), never another file built at the same path, whose entry ids and offsets
        may differ from those this mount has handed out."""
        if self._connection is None:
            connection, status = self._connected()
            if _file_key(status) != self._file:
                connection.close()
                connection = self._twin()
                self._file = _file_key(status)
            self._connection = connection
            self.on_open(self)
        return self._connection

    def _connected(self) -> tuple[sqlite3.Connection, os.stat_result]:
        """A connection to the file now at this index's path, and its status. A file gone
        was evicted by another process sharing the cache dir (only this process's
        eviction knows the file is in use here): ``Evicted``, with how to build it
        again."""
        try:
            connection = connect(self.path)
        except sqlite3.Error as error:
            if not self.path.exists():
                raise Evicted(f"layer index {self.path.name} was evicted by another process "
                              "while closed here", self.rebuild) from None  # fmt: skip
            raise Unavailable(f"layer index {self.path.name} cannot be opened again: "
                              f"{error}") from None  # fmt: skip
        try:
            return connection, self.path.stat()
        except OSError as error:
            connection.close()
            raise Unavailable(f"layer index {self.path.name} cannot be opened again: "
                              f"{error}") from None  # fmt: skip

    def _twin(self) -> sqlite3.Connection:
        """The file now at this index's path, if its pages are those first opened."""
        found = opened(self.path, None)
        if found is not None and self._seal is not None and found.seal == self._seal:
            return found.connection
        if found is not None:
            found.connection.close()
        raise Unavailable(f"layer index {self.path.name} cannot be opened again: another "
                          "process built it anew since, otherwise")  # fmt: skip

    async def all_entries(self) -> list[IndexEntry]:
        """``entries_in`` read in a worker thread."""
        if self._laid_out is not None:
            return self._laid_out.entries()
        return await self._in_thread("entry list", self.entries_in)

    def entries_in(self, db: sqlite3.Connection | None = None) -> list[IndexEntry]:
        """Every entry, in id order (parents first). Blocking: from the event loop, use
        ``all_entries``."""
        if self._laid_out is not None:
            return self._laid_out.entries()
        db = db if db is not None else self._db()
        return [entry_of(row) for row in db.execute(f"SELECT {COLUMNS} FROM entries ORDER BY id")]

    async def all_toc_chunks(self) -> list[TocChunk]:
        """``toc_chunks_in`` read in a worker thread."""
        if self._laid_out is not None:
            return self._laid_out.chunks()
        return await self._in_thread("TOC chunk list", self.toc_chunks_in)

    def toc_chunks_in(self, db: sqlite3.Connection | None = None) -> list[TocChunk]:
        """Every TOC chunk (or zTOC span), in stream order. Blocking: from the event loop,
        use ``all_toc_chunks``."""
        if self._laid_out is not None:
            return self._laid_out.chunks()
        db = db if db is not None else self._db()
        rows = db.execute("SELECT * FROM toc_chunks ORDER BY virtual_offset")
        return [TocChunk(int(r[0]), int(r[1]), int(r[2]), int(r[3]), bytes(r[4])) for r in rows]

    def entry(self, entry_id: int) -> IndexEntry:
        if self._laid_out is not None:
            return self._laid_out.entry(entry_id)
        row = (
            self._db()
            .execute(f"SELECT {COLUMNS} FROM entries WHERE id = ?", (entry_id,))
            .fetchone()
        )
        if row is None:
            raise KeyError(entry_id)
        return entry_of(row)

    def root(self) -> IndexEntry:
        return self.entry(ROOT_ID)

    def child(self, parent: int, name: bytes) -> IndexEntry | None:
        if self._laid_out is not None:
            return self._laid_out.child(parent, name)
        row = (
            self._db()
            .execute(f"SELECT {COLUMNS} FROM entries WHERE parent = ? AND name = ?", (parent, name))
            .fetchone()
        )
        return entry_of(row) if row else None

    async def children(self, parent: int) -> list[IndexEntry]:
        """A directory's entries by name. A listing not kept in memory is read in a worker
        thread: a directory of 100 000 names must not hold up every other request (point
        queries, by id or (parent, name), are index lookups and stay on the loop)."""
        if self._laid_out is not None:
            return self._laid_out.children(parent)
        key = (self.identity, parent)
        listing = self._listings.get(key)
        if listing is None:
            query = f"SELECT {COLUMNS} FROM entries WHERE parent = ? ORDER BY name"
            listing = await self._in_thread(
                f"listing of {parent}",
                lambda db: [entry_of(row) for row in db.execute(query, (parent,))],
            )
        keep(self._listings, key, listing)
        return listing

    async def _in_thread(self, what: str, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query`` run in a worker thread, started over if the owner closed the
        connection under it (it is opened on the loop, where ``on_open`` may run)."""
        for _ in range(3):
            db = self._db()
            try:
                with working():  # a listing of 100 000 names takes its time
                    return await trio.to_thread.run_sync(query, db)
            except sqlite3.ProgrammingError:
                if self._connection is db:
                    raise  # not closed under it: a bug, not a race
        raise Unavailable(f"layer index {self.path.name}: closed under every {what}")

    def names_of(self, inode_id: int) -> list[IndexEntry]:
        """Every name of a hard-linked inode (the first name and its links)."""
        if self._laid_out is not None:
            return self._laid_out.names_of(inode_id)
        rows = self._db().execute(
            f"SELECT {COLUMNS} FROM entries WHERE id = ? OR link = ?", (inode_id, inode_id)
        )
        return [entry_of(row) for row in rows]

    def path_of(self, entry_id: int) -> list[bytes]:
        parts: list[bytes] = []
        while entry_id != ROOT_ID:
            entry = self.entry(entry_id)
            parts.append(entry.name)
            entry_id = entry.parent
        return parts[::-1]

    def chunk_hash(self, index: int) -> bytes:
        row = self._db().execute("SELECT sha256 FROM chunks WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise KeyError(index)
        return bytes(row[0])

    def chunk_hashes(self, first: int, last: int) -> list[bytes]:
        """The hashes of chunks ``first`` to ``last`` (both included), in order."""
        rows = self._db().execute(
            "SELECT sha256 FROM chunks WHERE idx BETWEEN ? AND ? ORDER BY idx", (first, last)
        ).fetchall()  # fmt: skip
        if len(rows) != last - first + 1:
            raise KeyError((first, last))
        return [bytes(row[0]) for row in rows]

    def toc_chunk(self, position: int) -> TocChunk | None:
        """The eStargz chunk covering ``position`` of the virtual stream, if any."""
        if self._laid_out is not None:
            return self._laid_out.toc_chunk(position)
        row = self._db().execute(
            "SELECT * FROM toc_chunks WHERE virtual_offset <= ? "
            "ORDER BY virtual_offset DESC LIMIT 1", (position,)
        ).fetchone()  # fmt: skip
        if row is None or position >= row[0] + row[1]:
            return None
        return TocChunk(int(row[0]), int(row[1]), int(row[2]), int(row[3]), bytes(row[4]))

    def toc_chunks_between(self, start: int, end: int) -> list[TocChunk]:
        """The chunks (or zTOC spans) covering ``[start, end)`` of the stream, in order;
        fewer if the index has none for part of it (the caller says so)."""
        if self._laid_out is not None:
            return self._laid_out.toc_chunks_between(start, end)
        first = self.toc_chunk(start)
        if first is None:
            return []
        rows = self._db().execute(
            "SELECT * FROM toc_chunks WHERE virtual_offset > ? AND virtual_offset < ? "
            "ORDER BY virtual_offset", (first.virtual_offset, end)
        ).fetchall()  # fmt: skip
        return [first] + [TocChunk(int(r[0]), int(r[1]), int(r[2]), int(r[3]), bytes(r[4]))
                          for r in rows]  # fmt: skip

    async def pieces(self) -> list[tuple[bytes, int]]:
        """``pieces_in`` read in a worker thread (a layer may have thousands)."""
        if self._laid_out is not None:
            return self._laid_out.pieces()
        return await self._in_thread("piece list", self.pieces_in)

    def pieces_in(self, db: sqlite3.Connection | None = None) -> list[tuple[bytes, int]]:
        """(sha256, weight) of every piece the layer's content is cached in: its chunks
        (weighing their size), or its TOC chunks or zTOC spans (weighing what they take of
        the blob). Blocking: from the event loop, use ``pieces``."""
        if self._laid_out is not None:
            return self._laid_out.pieces()
        db = db if db is not None else self._db()
        if self.meta.chunk_size:
            size, chunk = self.meta.uncompressed_size, self.meta.chunk_size
            rows = db.execute("SELECT idx, sha256 FROM chunks ORDER BY idx").fetchall()
            return [(bytes(h), min(chunk, size - i * chunk)) for i, h in rows]
        query = "SELECT sha256, compressed_end - compressed_offset FROM toc_chunks"
        return [(bytes(h), int(n)) for h, n in db.execute(query).fetchall()]

    def stored_pieces_in(self) -> dict[bytes, int]:
        """sha256 → bytes of every piece the layer's content is cached in, as the chunk
        cache stores it: chunks of the tar and TOC chunks uncompressed, zTOC spans
        compressed (what a pin holds). Blocking."""
        if self._laid_out is not None:
            return self._laid_out.stored_pieces()
        if self.meta.kind is not IndexKind.TOC:
            return dict(self.pieces_in())
        query = "SELECT sha256, size FROM toc_chunks"
        return {bytes(h): int(n) for h, n in self._db().execute(query).fetchall()}

    def span_start(self, virtual_offset: int) -> tuple[int, bytes]:
        """The bits and window that start the zTOC span at ``virtual_offset``."""
        if self._laid_out is not None:
            return self._laid_out.span_start(virtual_offset)
        row = (
            self._db()
            .execute(
                "SELECT bits, window FROM span_starts WHERE uncompressed_offset = ?",
                (virtual_offset,),
            )
            .fetchone()
        )
        if row is None:
            raise KeyError(virtual_offset)
        return int(row[0]), zlib.decompress(bytes(row[1]))

    def checkpoint_before(self, offset: int) -> tuple[int, int]:
        """The last (uncompressed, compressed) checkpoint at or before ``offset``."""
        row = self._db().execute(
            "SELECT * FROM checkpoints WHERE uncompressed_offset <= ? "
            "ORDER BY 1 DESC LIMIT 1", (offset,)
        ).fetchone()  # fmt: skip
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def checkpoint_after(self, offset: int) -> tuple[int, int]:
        """The first (uncompressed, compressed) checkpoint after ``offset``, or the ends of
        the two streams."""
        row = self._db().execute(
            "SELECT * FROM checkpoints WHERE uncompressed_offset > ? "
            "ORDER BY 1 LIMIT 1", (offset,)
        ).fetchone()  # fmt: skip
        if row is None:
            return self.meta.uncompressed_size, self.meta.compressed_size
        return int(row[0]), int(row[1])

    def chunk_compressed_end(self, number: int) -> int:
        """For zstd: where the blob may stop for chunk ``number`` to come out whole."""
        row = self._db().execute(
            "SELECT compressed_end FROM chunks WHERE idx = ?", (number,)
        ).fetchone()  # fmt: skip
        if row is None or not row[0]:
            return self.meta.compressed_size
        return int(row[0])


def _file_key(status: os.stat_result) -> tuple[int, int]:
    return status.st_ino, status.st_ctime_ns
