"""``regfs cache pin | unpin`` and ``regfs prefetch --pin``: images kept out of eviction.

Application layer. A pin holds what the cache dir has of an image (``cached_image.py``)
by name, in ``pins/`` (``cache/pins.py``), where every process's eviction honours it.

- ``regfs cache pin IMAGE`` never asks a registry, as no ``regfs cache`` command does: it
  pins what the cache holds of the image and says what it lacks (exit 1 then). A piece it
  lacks is pinned by name all the same, so once a mount reads it, it stays; a layer with
  no index yet is pinned by digest. ``regfs prefetch --pin IMAGE`` fetches the rest.
- ``regfs prefetch --pin IMAGE`` pins the image before it fetches a layer, and each
  layer's pieces as soon as its index names them, before they are loaded (``cache/pins.py``
  says why in that order), then the whole as the cache holds it, as ``cache pin`` would.
- Pinning more than fits (``cache/pin_records.py``: all pins together at most 80 % of
  ``--cache-size``) fails naming the sizes, before any layer is fetched where the sizes say
  so (the manifest's compressed sizes for layers not indexed yet, the index's stored
  bytes for the others), else as soon as an index shows it; the pin is then taken back
  (an earlier pin of the reference put back as it was): nothing stays half-pinned.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.cache.pin_records import PINNED_SHARE, Pin, PinTooLarge
from regfs.cache.pins import Pins
from regfs.commands.cached_image import CachedImage, NotInCache, cached_image, missing_from, pin_now
from regfs.commands.status import human_size
from regfs.domain.digest import Digest
from regfs.domain.platform import Platform
from regfs.domain.reference import image_reference, parse_image_reference
from regfs.layers.layer_ref import LayerRef
from regfs.layers.pieces import VerifiedPieces
from regfs.layers.pinning import pinned_layer


def too_large(error: PinTooLarge) -> str:
    """What ``regfs`` says when a pin does not fit."""
    estimate = (" (layers not in the cache yet counted at their compressed size: more once "
                "indexed)") if error.estimated else ""  # fmt: skip
    return (f"cannot pin {error.reference}: it needs {human_size(error.needs)}{estimate} "
            f"beside the {human_size(error.pinned_elsewhere)} other pins hold, and all pins "
            f"may hold at most {human_size(error.room)} ({PINNED_SHARE:.0%} of --cache-size "
            f"{human_size(error.cache_size)}); nothing was pinned (regfs cache unpin frees "
            "room, or give a larger --cache-size)")  # fmt: skip


def _summary(pin: Pin, missing: list[str]) -> dict[str, object]:
    return {"reference": pin.reference, "digest": pin.digest, "image": pin.image,
            "platform": pin.platform, "bytes": pin.weight, "missing": missing}  # fmt: skip


def _pinned_text(pin: Pin, missing: list[str]) -> str:
    image = pin.image if pin.image == pin.digest else f"{pin.image} of index {pin.digest}"
    text = f"pinned {pin.reference}: {image}, {human_size(pin.weight)}\n"
    if missing:
        text += "".join(f"  not in the cache: {what}\n" for what in missing)
        text += f"  regfs prefetch --pin {pin.reference} fetches it\n"
    return text


def pin(args: argparse.Namespace) -> int:
    """``regfs cache pin IMAGE``: 0 if all of it is cached and pinned, 1 if only part of it
    (or, with nothing pinned, if the cache cannot say what it is or it does not fit)."""
    layout = CacheLayout(args.cache_dir)
    try:
        host, repository, reference = parse_image_reference(args.reference)
        image = cached_image(layout, host, repository, reference, args.platform)
    except (ValueError, NotInCache) as error:
        print(f"regfs: cannot pin {error}", file=sys.stderr)
        return 1
    pinned = pin_now(layout, image, args.platform)
    try:
        Pins(layout).save(pinned, cache_size=args.cache_size)
    except PinTooLarge as error:
        print(f"regfs: {too_large(error)}", file=sys.stderr)
        return 1
    missing = missing_from(layout, image, pinned)
    summary = _summary(pinned, missing)
    print(json.dumps(summary, indent=1) if args.json else _pinned_text(pinned, missing), end="")
    return 1 if missing else 0


def unpin(args: argparse.Namespace) -> int:
    """``regfs cache unpin IMAGE``: the pin of that reference, or, for a digest, every pin
    of the repository that holds it as its image or index."""
    try:
        host, repository, reference = parse_image_reference(args.reference)
    except ValueError as error:
        print(f"regfs: {error}", file=sys.stderr)
        return 1
    name = image_reference(host, repository, reference)
    pins = Pins(CacheLayout(args.cache_dir))
    found = [pin for pin in pins.all() if pin.reference == name]
    if not found and ":" in reference:
        found = [pin for pin in pins.all() if reference in (pin.digest, pin.image)
                 and parse_image_reference(pin.reference)[:2] == (host, repository)]  # fmt: skip
    if not found:
        print(f"regfs: {name} is not pinned (regfs cache stats lists the pins)", file=sys.stderr)
        return 1
    for each in found:
        pins.remove(each.reference)
    result = {"unpinned": [each.reference for each in found]}
    text = "".join(f"unpinned {each.reference} ({each.image})\n" for each in found)
    print(json.dumps(result, indent=1) if args.json else text, end="")
    return 0


def stats(cache_dir: Path) -> dict[str, object]:
    """The pins for ``regfs cache stats``: each with the bytes of what it holds that the
    cache dir has now, and what all of them hold together."""
    layout = CacheLayout(cache_dir)
    chunks = ChunkCache(layout, 1 << 62)
    index_files = {path.name: path.stat().st_size for path in _files(layout.indexes)}
    every: dict[str, int] = {}
    listed = []
    for each in Pins(layout).all():
        held: dict[str, int] = {}
        absent = 0
        names = [*each.objects, *(piece for layer in each.layers for piece in layer.pieces)]
        for name in names:
            path = chunks.path_of(bytes.fromhex(name))
            try:
                held[str(path)] = path.stat().st_size
            except FileNotFoundError:
                absent += 1
        prefixes = {layer.file_prefix for layer in each.layers}
        held |= {f"indexes/{file}": size for file, size in index_files.items()
                 if file.split(".", 1)[0] in prefixes}  # fmt: skip
        every |= held
        not_indexed = sum(layer.stored is None for layer in each.layers)
        listed.append({"reference": each.reference, "digest": each.digest, "image": each.image,
                       "platform": each.platform, "pinned_at": each.pinned_at,
                       "bytes": sum(held.values()), "pieces_missing": absent,
                       "layers_not_indexed": not_indexed})  # fmt: skip
    return {"pins": listed, "pinned": sum(every.values())}


def _files(directory: Path) -> list[Path]:
    try:
        return [path for path in directory.iterdir() if not path.name.startswith(".")]
    except FileNotFoundError:
        return []


class PrefetchPins:
    """``regfs prefetch --pin``: its pins, recorded in the order ``cache/pins.py`` needs."""

    def __init__(self, cache_dir: Path, cache_size: int, platform: Platform) -> None:
        self._layout = CacheLayout(cache_dir)
        self._pins = Pins(self._layout)
        self._cache_size = cache_size
        self._platform = platform
        self._images: dict[str, tuple[tuple[str, str, str], CachedImage]] = {}
        """Pin reference → the (host, repository, tag or digest) it stands for, and the
        image pinned for it."""
        self._pinned: dict[str, Pin] = {}
        self._before: dict[str, Pin | None] = {}
        """Each reference's pin before this run: put back if a pin does not fit."""
        self._writing = trio.Lock()
        self.refused: PinTooLarge | None = None
        self.done: dict[str, tuple[Pin, list[str]]] = {}
        """Once finished: reference → its pin, and what the cache lacks of the image."""

    async def begin(self, host: str, repository: str, reference: str, named: Digest) -> str:
        """Pin the image ``reference`` names (``named``, kept in the cache by now) with
        what the cache holds of it, before any layer is fetched; its pin's reference.
        ``PinTooLarge`` if the sizes known now say it cannot fit."""
        image = await self._cached(host, repository, reference, named)
        if image.reference not in self._before:
            self._before[image.reference] = await trio.to_thread.run_sync(
                self._pins.get, image.reference
            )
        self._images[image.reference] = ((host, repository, reference), image)
        pinned = await trio.to_thread.run_sync(pin_now, self._layout, image, self._platform)
        await self._save(pinned)
        return image.reference

    async def indexed(self, reference: str, layer: LayerRef) -> None:
        """The layer's index is in the cache: pin the pieces it names, before they are
        loaded. ``PinTooLarge`` (also kept in ``refused``) if they do not fit."""
        pinned = await trio.to_thread.run_sync(
            pinned_layer, self._layout, layer.digest, layer.descriptor.size or 0
        )
        async with self._writing:  # each layer's record written after the one before
            try:
                await self._save(self._pinned[reference].with_layer(pinned))
            except PinTooLarge as error:
                self.refused = self.refused or error
                raise

    async def finish(self, pieces: VerifiedPieces) -> None:
        """Pin each image as the cache holds it now (its SOCI index, found on the way,
        too), into ``done``."""
        for name, ((host, repository, reference), began) in self._images.items():
            image = await self._cached(host, repository, reference, began.digest)
            pinned = await trio.to_thread.run_sync(pin_now, self._layout, image, self._platform)
            await self._save(pinned)
            for layer in pinned.layers:  # pieces loaded before their pin may be in memory only
                for piece in layer.pieces:
                    await pieces.keep_on_disk(bytes.fromhex(piece))
            missing = await trio.to_thread.run_sync(missing_from, self._layout, image, pinned)
            self.done[name] = (pinned, missing)

    @property
    def complete(self) -> bool:
        """True once every image is pinned whole."""
        return len(self.done) == len(self._images) and not any(m for _, m in self.done.values())

    async def _cached(
        self, host: str, repository: str, reference: str, named: Digest
    ) -> CachedImage:
        find = functools.partial(cached_image, named=named)
        return await trio.to_thread.run_sync(
            find, self._layout, host, repository, reference, self._platform
        )

    async def _save(self, pinned: Pin) -> None:
        save = functools.partial(self._pins.save, cache_size=self._cache_size)
        await trio.to_thread.run_sync(save, pinned)
        self._pinned[pinned.reference] = pinned

    def undo(self) -> None:
        """Take back this run's pins: earlier pins of the same references as they were."""
        for reference, before in self._before.items():
            if before is None:
                self._pins.remove(reference)
            else:
                self._pins.save(before, cache_size=None)


def report(done: dict[str, tuple[Pin, list[str]]], *, quiet: bool) -> None:
    """What ``regfs prefetch --pin`` says of its pins."""
    for pinned, missing in done.values():
        if missing:
            print(f"regfs: {_pinned_text(pinned, missing)}", end="", file=sys.stderr)
        elif not quiet:
            print(_pinned_text(pinned, missing), end="", flush=True)
