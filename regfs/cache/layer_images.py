"""Which images each cached layer was used for: what ``regfs cache stats`` names.

Cache layer: imports nothing from regfs above it but the domain. The layer indexes are
keyed by layer digest alone, so nothing in them says whose layer it is; a mount or
``regfs prefetch`` that resolves a layer's index for an image records that image here:

- one small text file per layer, ``images/<algorithm>-<hex>``, a line per image,
  least recently recorded first: ``HOST/REPOSITORY@DIGEST [TAG …]`` (tags where the
  recorder knew them: ``regfs prefetch`` is given one; a mount reaches layers through
  digest dirs);
- bounded: at most ``MAX_IMAGES`` images a layer and ``MAX_TAGS`` tags an image (the
  oldest go), lines of at most ``MAX_LINE`` bytes;
- rewritten whole (``.tmp`` → fsync → rename) under an ``flock`` on ``images/.lock``, so
  two processes recording at once lose neither record, and a crash leaves the old file
  or the new one; the file is read back leniently (a line it cannot use is skipped);
- swept with the layer: ``sweep`` removes the files of layers that no longer have an
  index (the chunk cache's eviction calls it after deleting indexes), ``forget`` those
  of layers pruned by name. The files are not counted against ``--cache-size``: they
  are a few hundred bytes per indexed layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from regfs.cache.layout import CacheLayout
from regfs.cache.temporaries import is_abandoned
from regfs.domain.digest import Digest

log = logging.getLogger(__name__)

MAX_IMAGES = 32
MAX_TAGS = 8
MAX_LINE = 1024
MAX_FILE = MAX_IMAGES * MAX_LINE
NOTED_IN_MEMORY = 1 << 16
"""(layer, image, tag) a process remembers having recorded, so that asking again costs
nothing; past that it forgets them all, and the next record of each rewrites its file."""


@dataclass(frozen=True, slots=True)
class ImageUse:
    """An image a layer was used for."""

    host: str
    repository: str
    digest: str
    tags: tuple[str, ...] = ()

    def line(self) -> str:
        return " ".join((f"{self.host}/{self.repository}@{self.digest}", *self.tags))

    @property
    def image(self) -> tuple[str, str, str]:
        return self.host, self.repository, self.digest


def _parsed(line: str) -> ImageUse | None:
    words = line.split()
    if not words or len(line) > MAX_LINE:
        return None
    name, _, digest = words[0].rpartition("@")
    host, _, repository = name.partition("/")
    if not (host and repository and digest):
        return None
    return ImageUse(host, repository, digest, tuple(words[1 : 1 + MAX_TAGS]))


def _usable(use: ImageUse) -> bool:
    """True if ``use`` makes one line that reads back as itself."""
    words = [use.host, use.repository, use.digest, *use.tags]
    return all(word and not any(c.isspace() for c in word) for word in words) and (
        len(use.line()) <= MAX_LINE and _parsed(use.line()) == use
    )


def _file(layout: CacheLayout, layer: str) -> Path:
    """``layer``: a digest (``sha256:…``) or its file-name form (``sha256-…``)."""
    return layout.images / layer.replace(":", "-")


def read(layout: CacheLayout, layer: str) -> list[ImageUse]:
    """The images recorded for ``layer``, least recently recorded first."""
    try:
        with open(_file(layout, layer), encoding="utf-8", errors="replace") as file:
            text = file.read(MAX_FILE)
    except OSError:
        return []
    return [use for line in text.splitlines() if (use := _parsed(line)) is not None]


def merged(uses: list[ImageUse], new: ImageUse) -> list[ImageUse]:
    """``uses`` with ``new`` recorded: its tags added to the image's own (which moves to
    the end), within the bounds."""
    old = next((use for use in uses if use.image == new.image), None)
    tags = tuple(dict.fromkeys((*old.tags, *new.tags)) if old else new.tags)[-MAX_TAGS:]
    kept = [use for use in uses if use.image != new.image]
    return [*kept, ImageUse(new.host, new.repository, new.digest, tags)][-MAX_IMAGES:]


def record(layout: CacheLayout, layer: str, use: ImageUse) -> None:
    """Record that ``layer`` was used for ``use``'s image; blocking (run it in a worker
    thread). A file that would not change is not written."""
    if not _usable(use):
        log.debug("layer %s: image %r not recorded (not one line)", layer, use)
        return
    directory = layout.images
    directory.mkdir(exist_ok=True)
    with _locked(directory / ".lock"):
        uses = read(layout, layer)
        updated = merged(uses, use)
        if updated != uses:
            _write(_file(layout, layer), "".join(f"{u.line()}\n" for u in updated))


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # held for one small rewrite
        yield
    finally:
        os.close(descriptor)


def forget(layout: CacheLayout, layers: Collection[str]) -> None:
    """Remove the records of ``layers`` (digests), whose indexes were pruned."""
    for layer in layers:
        _file(layout, layer).unlink(missing_ok=True)


def sweep(layout: CacheLayout) -> None:
    """Remove the records of layers with no index left, and temporaries whose writer is
    gone. A record written after the indexes were listed stays (its index may have been
    published meanwhile)."""
    directory = layout.images
    listed_at = time.time()
    indexed = {path.name.split(".")[0] for path in layout.indexes.glob("sha*.sqlite")}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if entry.name.startswith("."):
                if entry.name != ".lock" and is_abandoned(Path(entry.path), mtime, listed_at):
                    os.unlink(entry.path)
            elif entry.name not in indexed and mtime < listed_at:
                os.unlink(entry.path)


class LayerImages:
    """Records, for a process, which images it used each layer for: the first time only."""

    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout
        self._noted: set[tuple[Digest, str, str, Digest, str | None]] = set()

    async def note(
        self,
        layer: Digest,
        host: str,
        repository: str,
        image: Digest | None,
        *,
        tag: str | None = None,
    ) -> None:
        """Record that ``layer`` was used for ``host/repository@image`` (and ``tag``):
        nothing to do if this process did already, else one small rewrite in a worker
        thread. A failure is logged, never raised: the layer is served all the same."""
        key = (layer, host, repository, image, tag) if image is not None else None
        if key is None or key in self._noted:
            return
        if len(self._noted) >= NOTED_IN_MEMORY:
            self._noted.clear()
        self._noted.add(key)
        use = ImageUse(host, repository, str(image), (tag,) if tag else ())
        try:
            await trio.to_thread.run_sync(record, self._layout, str(layer), use)
        except OSError as error:
            self._noted.discard(key)
            log.warning("layer %s: its use by %s not recorded in the cache dir: %s",
                        layer, use.line(), error.strerror or error)  # fmt: skip

    async def recorded(self, layer: Digest) -> list[ImageUse]:
        """The images ``layer`` was recorded for, by any process on the cache dir, the
        most recently recorded first."""
        uses = await trio.to_thread.run_sync(read, self._layout, str(layer))
        return uses[::-1]
