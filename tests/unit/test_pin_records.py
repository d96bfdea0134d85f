"""Pin records (``cache/pin_records.py``): what they say back, what they protect, how much
they hold, and whether another fits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from regfs.cache.pin_records import (
    Pin,
    PinnedLayer,
    PinTooLarge,
    check_fits,
    decoded,
    encoded,
    file_name,
    pinned_bytes,
    protection,
    room_for_pins,
)

MIB = 1 << 20


def hexes(*seeds: int) -> tuple[str, ...]:
    return tuple(f"{seed:064x}" for seed in seeds)


def layer(seed: int, *, compressed: int = 10 * MIB, stored: int | None = 30 * MIB) -> PinnedLayer:
    return PinnedLayer(f"sha256:{seed:064x}", compressed, stored, hexes(seed * 100, seed * 100 + 1))


def pin(reference: str = "h:5000/app:1", *layers: PinnedLayer, manifest: int = 7) -> Pin:
    return Pin(reference, f"sha256:{manifest:064x}", f"sha256:{manifest:064x}", "linux/amd64",
               1.5, {f"{manifest:064x}": 1000}, layers)  # fmt: skip


def test_a_record_reads_back_as_it_was_written() -> None:
    written = pin("h:5000/app:1", layer(1), layer(2, stored=None))
    assert decoded(encoded(written)) == written


Record = dict[str, Any]


def first_layer(record: Record) -> Record:
    return record["layers"][0]  # type: ignore[no-any-return]


CORRUPTIONS: dict[str, Callable[[Record], object]] = {
    "no image": lambda r: r.pop("image"),
    "empty reference": lambda r: r.update(reference=""),
    "reference not text": lambda r: r.update(reference=5),
    "time not a number": lambda r: r.update(pinned_at="soon"),
    "object not hex": lambda r: r.update(objects={"not hex": 1}),
    "negative size": lambda r: r.update(objects={f"{1:064x}": -1}),
    "size a boolean": lambda r: r.update(objects={f"{1:064x}": True}),
    "short piece name": lambda r: first_layer(r).update(pieces=[f"{1:063x}"]),
    "upper-case piece name": lambda r: first_layer(r).update(pieces=[f"{0xAB:064X}"]),
    "stored not a count": lambda r: first_layer(r).update(stored=1.5),
    "layers not a list": lambda r: r.update(layers="none"),
    "layer not a record": lambda r: r.update(layers=[[]]),
}


@pytest.mark.parametrize("change", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_record_that_is_not_a_pin_is_none(change: Callable[[Record], object]) -> None:
    record = json.loads(encoded(pin("h:5000/app:1", layer(1))))
    change(record)
    assert decoded(json.dumps(record).encode()) is None


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"layers": []}'])
def test_bytes_that_are_no_record_are_none(data: bytes) -> None:
    assert decoded(data) is None


def test_one_file_per_reference() -> None:
    assert file_name("h:5000/app:1") == file_name("h:5000/app:1")
    assert file_name("h:5000/app:1") != file_name("h:5000/app:2")
    assert file_name("h:5000/app:1").endswith(".json") and "/" not in file_name("h:5000/a/b:1")


def test_a_pin_protects_its_objects_pieces_and_every_index_file_of_its_layers() -> None:
    kept = protection([pin("h:5000/a:1", layer(1)), pin("h:5000/b:1", layer(2), manifest=8)])
    assert kept.pieces == {f"{7:064x}", f"{8:064x}", *hexes(100, 101, 200, 201)}
    name = f"sha256-{1:064x}"
    for index_file in (f"{name}.sqlite", f"{name}.toc-0123abcd.sqlite", f"{name}.blob-pieces",
                       f"{name}.soci-89ab.sqlite"):  # fmt: skip
        assert kept.keeps_index_file(index_file), index_file
    assert not kept.keeps_index_file(f"sha256-{3:064x}.sqlite")
    assert not kept.keeps_index_file(f".{name}.sqlite.123.abcdef01.tmp")  # a temporary
    assert kept.keeps_chunk(f"{100:064x}") and not kept.keeps_chunk(f"{102:064x}")
    assert not protection([])


def test_a_layer_not_indexed_yet_is_protected_by_digest_and_weighs_its_compressed_size() -> None:
    waiting = PinnedLayer(f"sha256:{4:064x}", 5 * MIB)
    kept = protection([pin("h:5000/a:1", waiting)])
    assert kept.keeps_index_file(f"sha256-{4:064x}.sqlite")
    assert waiting.weight == 5 * MIB
    assert pin("h:5000/a:1", waiting).weight == 5 * MIB + 1000


def test_what_two_pins_share_is_counted_once() -> None:
    shared = layer(1)
    first = pin("h:5000/a:1", shared, layer(2))
    second = pin("h:5000/a:2", shared, layer(3))  # the same manifest too: one object
    assert pinned_bytes([first, second]) == 1000 + 3 * 30 * MIB
    later = pin("h:5000/a:3", PinnedLayer(shared.digest, 10 * MIB, 31 * MIB, shared.pieces))
    assert pinned_bytes([first, later]) == 1000 + 31 * MIB + 30 * MIB  # its larger figure


def test_all_pins_may_hold_four_fifths_of_the_cache_size() -> None:
    assert room_for_pins(100 * MIB) == 80 * MIB
    size = 100 * MIB
    exactly = pin("h:5000/a:1", PinnedLayer(f"sha256:{1:064x}", 1, 80 * MIB - 1000))
    check_fits(exactly, [], size)
    over = pin("h:5000/a:1", PinnedLayer(f"sha256:{1:064x}", 1, 80 * MIB - 999))
    with pytest.raises(PinTooLarge) as refused:
        check_fits(over, [], size)
    assert (refused.value.needs, refused.value.pinned_elsewhere) == (80 * MIB + 1, 0)
    assert refused.value.room == 80 * MIB and not refused.value.estimated


def test_a_pin_must_fit_beside_the_others_but_not_beside_its_own_earlier_record() -> None:
    other = pin("h:5000/other:1", PinnedLayer(f"sha256:{9:064x}", 1, 50 * MIB), manifest=9)
    mine = pin("h:5000/a:1", PinnedLayer(f"sha256:{1:064x}", 40 * MIB))  # not indexed yet
    with pytest.raises(PinTooLarge) as refused:
        check_fits(mine, [other], 100 * MIB)
    assert refused.value.needs == 40 * MIB + 1000
    assert refused.value.pinned_elsewhere == 50 * MIB + 1000
    assert refused.value.estimated  # its layer counts at its compressed size
    check_fits(mine, [mine, pin("h:5000/a:1", layer(5))], 100 * MIB)  # replaced, not added
    sharing = pin("h:5000/b:1", *other.layers, manifest=9)  # all it holds is held already
    check_fits(sharing, [other], 100 * MIB)
