"""Recording which files a mount reads (``regfs mount --record-reads FILE``), for a start
record.

Layers layer. The first read of each file of a layer (below ``rootfs/``, a layer dir or
a layer store's ``diff``) appends its path, from the image's root, to the record file:
one path per line, each once, in the order first read, the form ``regfs index
push-start`` takes. Mount, run the start once, and push the file. Each line is written as
it is found (line buffered), so the file is whole whenever the start ends; a path whose
name holds a newline cannot be written so and is left out. A mount records whatever is
read through it: a record of one start wants a mount used for nothing else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from regfs.domain.start_record import MAX_FILES
from regfs.layers.formats.entries import IndexEntry
from regfs.layers.index.layer_index import LayerIndex

log = logging.getLogger(__name__)


class ReadRecorder:
    def __init__(self, path: Path) -> None:
        """Append to ``path`` (made if missing): an earlier start's record goes on."""
        self._file = path.open("a", encoding="utf-8", errors="surrogateescape", buffering=1)
        self._path = path
        self._seen: set[tuple[Path, int]] = set()
        self._stopped = False

    def first_read(self, index: LayerIndex, entry: IndexEntry) -> None:
        """A read of ``entry``, a file of ``index``'s layer: its path is written the first
        time (a hard link's data once, by the name read first)."""
        key = (index.path, entry.inode_id)
        if self._stopped or key in self._seen or len(self._seen) >= MAX_FILES:
            return
        self._seen.add(key)
        path = b"/".join(index.path_of(entry.id))
        if b"\n" in path:
            return
        try:
            self._file.write(f"/{os.fsdecode(path)}\n")
        except OSError as error:  # a full disk: the reads go on, the record stops
            log.warning("%s: read record not written (%s): recording stops", self._path, error)
            self._stopped = True

    def close(self) -> None:
        self._file.close()
