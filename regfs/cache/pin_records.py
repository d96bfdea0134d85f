"""Pins: what each one keeps out of eviction, how much it holds, and whether more fits.

Cache layer, pure: no IO. A pin names an image (``HOST/REPOSITORY:TAG`` or ``@DIGEST``, as
the user gave it) and everything the cache dir holds of it, by name:

- ``objects``: its manifests (an index's too), config and SOCI index, kept in ``chunks/``
  under their sha256 (``objects.py``), with their sizes;
- ``layers``: per layer digest, the pieces its index files name (chunks of the tar, TOC
  chunks, zTOC spans) and those of its compressed blob (``<layer>.blob-pieces``), by
  sha256; and every file of ``indexes/`` named after the layer (``<algorithm>-<hex>.…``:
  its index from the whole blob, from a TOC or a zTOC, its blob-pieces list), including
  one built after the pin was recorded.

Through its reference and digests, a pin also keeps the files of ``answers/`` and
``confirmed/`` that show the image while its registry cannot be reached (its tag's
target, its repository's tags, the host's catalog, that the repository holds each
digest): a few files per image, not weighed in the fits rule.

A layer whose index is not in the cache yet is pinned by digest only (its index files,
once made, are protected; its pieces once a later pin names them), and weighs its
compressed size until then: what it stores once indexed is about that or more (chunks of
the tar are kept uncompressed).

The fits rule: all pins together (a layer or object pinned twice counted once) may hold
at most ``PINNED_SHARE`` of ``--cache-size``. The rest is room to work: the chunks a mount
reads, the blobs it indexes (in ``tmp/``, up to 4 at once), and the 10 % eviction
frees below the bound each time it runs. Pinned bytes count against the bound like any
other, so a cache full of pins would evict everything else on every write.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from regfs.cache.answers import file_name as answer_file
from regfs.cache.answers import pinned_questions
from regfs.cache.confirmations import file_name as confirmation_file
from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.reference import parse_image_reference

PINNED_SHARE = 0.8
MAX_PIN_BYTES = 64 << 20
"""A pin record's size at most (about a million pieces: a 1 TiB image)."""


@dataclass(frozen=True, slots=True)
class PinnedLayer:
    digest: str
    """``sha256:<hex>``."""
    compressed_size: int
    stored: int | None = None
    """Bytes its index files and the pieces they name take in the cache dir, once it is
    indexed; None before."""
    pieces: tuple[str, ...] = ()
    """Hex sha256 of every piece its index files and blob-pieces list name."""

    @property
    def file_prefix(self) -> str:
        """What the names of its files in ``indexes/`` begin with (before the first dot)."""
        return self.digest.replace(":", "-", 1)

    @property
    def weight(self) -> int:
        """What it counts for in the fits rule."""
        return self.stored if self.stored is not None else self.compressed_size


@dataclass(frozen=True, slots=True)
class Pin:
    reference: str
    """As the user named the image, normalised: ``HOST/REPOSITORY:TAG`` or ``…@DIGEST``."""
    digest: str
    """What the reference named when pinned: an image manifest, or an index."""
    image: str
    """The image manifest pinned: ``digest`` itself, or the platform's image of the index."""
    platform: str
    pinned_at: float
    objects: dict[str, int] = field(default_factory=dict)
    """Hex sha256 → size of its manifests, config and SOCI index."""
    layers: tuple[PinnedLayer, ...] = ()

    @property
    def weight(self) -> int:
        return pinned_bytes([self])

    def layer(self, digest: str) -> PinnedLayer | None:
        return next((layer for layer in self.layers if layer.digest == digest), None)

    def with_layer(self, new: PinnedLayer) -> Pin:
        """This pin with ``new`` in place of the layer of its digest."""
        layers = tuple(new if layer.digest == new.digest else layer for layer in self.layers)
        return Pin(self.reference, self.digest, self.image, self.platform, self.pinned_at,
                   self.objects, layers)  # fmt: skip


def file_name(reference: str) -> str:
    """The pin's file in ``pins/``: one per reference."""
    return hashlib.sha256(reference.encode()).hexdigest()[:40] + ".json"


def encoded(pin: Pin) -> bytes:
    return json.dumps({
        "reference": pin.reference, "digest": pin.digest, "image": pin.image,
        "platform": pin.platform, "pinned_at": pin.pinned_at, "objects": pin.objects,
        "layers": [{"digest": layer.digest, "compressed_size": layer.compressed_size,
                    "stored": layer.stored, "pieces": list(layer.pieces)}
                   for layer in pin.layers],
    }).encode()  # fmt: skip


def decoded(data: bytes) -> Pin | None:
    """The pin ``encoded`` made, or None for anything else (a damaged or foreign file)."""
    try:
        record = json.loads(data)
        layers = tuple(
            PinnedLayer(_text(layer["digest"]), _count(layer["compressed_size"]),
                        None if layer["stored"] is None else _count(layer["stored"]),
                        tuple(_hex(piece) for piece in layer["pieces"]))
            for layer in record["layers"]
        )  # fmt: skip
        objects = {_hex(name): _count(size) for name, size in record["objects"].items()}
        reference, digest, image, platform = (
            _text(record[key]) for key in ("reference", "digest", "image", "platform")
        )
        return Pin(reference, digest, image, platform, float(record["pinned_at"]), objects, layers)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(value)
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(value)
    return value


def _hex(value: object) -> str:
    text = _text(value)
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise ValueError(value)
    return text


@dataclass(frozen=True, slots=True)
class Protection:
    """What eviction must leave: pieces and kept objects by name, index files by layer."""

    pieces: frozenset[str] = frozenset()
    """Hex names of files in ``chunks/``."""
    layers: frozenset[str] = frozenset()
    """``PinnedLayer.file_prefix`` of each pinned layer."""
    answers: frozenset[str] = frozenset()
    """Names of files in ``answers/``: what each pinned image is found through."""
    confirmations: frozenset[str] = frozenset()
    """Names of files in ``confirmed/``, relative to it: that each pinned image's
    repository holds its manifests, config and layers."""

    def keeps_chunk(self, name: str) -> bool:
        return name in self.pieces

    def keeps_index_file(self, name: str) -> bool:
        """True for a file of ``indexes/`` named after a pinned layer."""
        return name.split(".", 1)[0] in self.layers

    def __bool__(self) -> bool:
        return bool(self.pieces or self.layers or self.answers or self.confirmations)


def protection(pins: Iterable[Pin]) -> Protection:
    pieces: set[str] = set()
    layers: set[str] = set()
    answers: set[str] = set()
    confirmations: set[str] = set()
    for pin in pins:
        pieces.update(pin.objects)
        for layer in pin.layers:
            pieces.update(layer.pieces)
            layers.add(layer.file_prefix)
        kept = _kept_answers_and_confirmations(pin)
        answers.update(kept[0])
        confirmations.update(kept[1])
    return Protection(frozenset(pieces), frozenset(layers), frozenset(answers),
                      frozenset(confirmations))  # fmt: skip


def _kept_answers_and_confirmations(pin: Pin) -> tuple[list[str], list[str]]:
    """The files of ``answers/`` and ``confirmed/`` a pinned image is shown through while
    its registry is away (none for a record whose names do not parse: ignored as any)."""
    try:
        host, repository, reference = parse_image_reference(pin.reference)
        image = Digest.parse(pin.image)
        digests = {pin.digest, pin.image, *(layer.digest for layer in pin.layers),
                   *(f"sha256:{name}" for name in pin.objects)}  # fmt: skip
        confirmed = [confirmation_file(host, repository, Digest.parse(d)) for d in digests]
    except (ValueError, MalformedContent):
        return [], []
    questions = pinned_questions(host, repository, reference, image)
    return [answer_file(question) for question in questions], confirmed


def pinned_bytes(pins: Iterable[Pin]) -> int:
    """What ``pins`` hold together: each object and each layer counted once (by its
    largest figure, if two pins recorded it at different times)."""
    objects: dict[str, int] = {}
    layers: dict[str, int] = {}
    for pin in pins:
        for name, size in pin.objects.items():
            objects[name] = max(objects.get(name, 0), size)
        for layer in pin.layers:
            layers[layer.digest] = max(layers.get(layer.digest, 0), layer.weight)
    return sum(objects.values()) + sum(layers.values())


def room_for_pins(cache_size: int) -> int:
    """The most all pins may hold under a ``--cache-size`` of ``cache_size``."""
    return math.floor(cache_size * PINNED_SHARE)


class PinTooLarge(Exception):
    """Pinning this would hold more than the fits rule allows."""

    def __init__(self, pin: Pin, needs: int, pinned_elsewhere: int, cache_size: int) -> None:
        """``needs``: what ``pin`` adds to the others (what it shares with them is theirs);
        ``pinned_elsewhere``: what the pins of other references hold."""
        super().__init__(pin.reference, needs, pinned_elsewhere, cache_size)
        self.reference = pin.reference
        self.needs = needs
        self.pinned_elsewhere = pinned_elsewhere
        self.cache_size = cache_size
        self.estimated = any(layer.stored is None for layer in pin.layers)
        """True if a layer not indexed yet counts at its compressed size."""

    @property
    def room(self) -> int:
        return room_for_pins(self.cache_size)


def check_fits(pin: Pin, others: Iterable[Pin], cache_size: int) -> None:
    """Raise ``PinTooLarge`` unless ``pin`` and ``others`` (the pins of other references)
    together fit the rule."""
    kept = [other for other in others if other.reference != pin.reference]
    elsewhere = pinned_bytes(kept)
    total = pinned_bytes([*kept, pin])
    if total > room_for_pins(cache_size):
        raise PinTooLarge(pin, total - elsewhere, elsewhere, cache_size)
