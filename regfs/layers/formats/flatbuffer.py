"""Reading a FlatBuffer whose every offset is checked: zTOCs come from registries.

Layers layer, pure. The ``flatbuffers`` package writes them (``ztoc_encode.encode_ztoc``), but its
Python reader trusts the buffer: an offset out of range is an IndexError somewhere, a
vector claiming 2³¹ elements is a long loop. This reader follows the format (a root offset,
tables found through vtables, little-endian scalars, length-prefixed strings and vectors)
and turns anything out of bounds into MalformedContent.

Format: https://flatbuffers.dev/internals/
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from regfs.domain.errors import MalformedContent

_UOFFSET = struct.Struct("<I")
_VOFFSET = struct.Struct("<H")
_SOFFSET = struct.Struct("<i")


class Table:
    """A table of ``buffer`` at ``position``; fields are asked for by their id (0, 1, …).

    Offsets may point many times at one string: every byte copied out is charged to a
    budget shared by all tables of the buffer (``_Shared``), so a small buffer cannot make
    its reader copy out gigabytes.
    """

    def __init__(self, buffer: bytes, position: int, shared: _Shared | None = None) -> None:
        self._buffer = buffer
        self._position = position
        self._shared = shared if shared is not None else _Shared(len(buffer))
        vtable = position - _read(buffer, _SOFFSET, position)
        slots = self._shared.slots.get(vtable)
        if slots is None:
            vtable_size = _read(buffer, _VOFFSET, vtable)
            if vtable_size < 4 or vtable_size % 2:
                raise MalformedContent(f"flatbuffer: vtable of {vtable_size} bytes")
            _check(buffer, vtable, vtable_size)
            slots = struct.unpack_from(f"<{vtable_size // 2 - 2}H", buffer, vtable + 4)
            self._shared.keep(vtable, slots)
        self._slots = slots
        """Each field's offset in the table (0: absent), read from the vtable at once (the
        tables of a vector mostly share one vtable: read once)."""

    @classmethod
    def root(cls, buffer: bytes, budget: int) -> Table:
        """The root table; at most ``budget`` bytes may be copied out of the buffer."""
        return cls(buffer, _read(buffer, _UOFFSET, 0), _Shared(budget))

    def _field(self, field_id: int) -> int | None:
        """Where field ``field_id`` lies in the buffer, or None if absent (its default)."""
        if field_id >= len(self._slots):
            return None
        offset = self._slots[field_id]
        return self._position + offset if offset else None

    def scalar(self, field_id: int, layout: str, default: int = 0) -> int:
        """A scalar field in ``struct`` notation (``"<q"``, ``"<I"``, ``"<b"``). Inlined
        (as ``blob``): a zTOC has about 20 fields for each of its files; a field's position
        is never negative (a table's, plus an unsigned offset)."""
        slots = self._slots
        if field_id >= len(slots) or not (offset := slots[field_id]):
            return default
        layout_struct = _STRUCTS.get(layout) or _STRUCTS.setdefault(layout, struct.Struct(layout))
        try:
            value: int = layout_struct.unpack_from(self._buffer, self._position + offset)[0]
        except struct.error:
            _check(self._buffer, self._position + offset, layout_struct.size)
            raise
        return value

    def _indirect(self, field_id: int) -> int | None:
        position = self._field(field_id)
        if position is None:
            return None
        return position + _read(self._buffer, _UOFFSET, position)

    def blob(self, field_id: int) -> bytes:
        """A string or a ``[ubyte]`` vector (b"" when absent)."""
        slots = self._slots
        if field_id >= len(slots) or not (offset := slots[field_id]):
            return b""
        position = self._position + offset
        try:
            return self._copied(position + _UOFFSET.unpack_from(self._buffer, position)[0])
        except struct.error:
            _check(self._buffer, position, _UOFFSET.size)
            raise

    def table(self, field_id: int) -> Table | None:
        start = self._indirect(field_id)
        return None if start is None else Table(self._buffer, start, self._shared)

    def tables(self, field_id: int) -> Iterator[Table]:
        for element in self._offsets(field_id):
            yield Table(self._buffer, element, self._shared)

    def strings(self, field_id: int) -> Iterator[bytes]:
        for element in self._offsets(field_id):
            yield self._copied(element)

    def _copied(self, start: int) -> bytes:
        """The bytes of the vector at ``start`` (never negative), charged to the budget."""
        buffer = self._buffer
        try:
            (length,) = _UOFFSET.unpack_from(buffer, start)
        except struct.error:
            _check(buffer, start, _UOFFSET.size)
            raise
        end = start + 4 + length
        if end > len(buffer):
            _check(buffer, start + 4, length)
        data = buffer[start + 4 : end]
        shared = self._shared
        shared.budget -= len(data) + 4  # an empty string still costs its element
        if shared.budget < 0:
            raise MalformedContent("flatbuffer: its offsets point at the same bytes too often")
        return data

    def _offsets(self, field_id: int) -> Iterator[int]:
        """The targets of a vector of offsets (of tables or strings)."""
        start = self._indirect(field_id)
        if start is None:
            return
        length = _read(self._buffer, _UOFFSET, start)
        _check(self._buffer, start + 4, 4 * length)
        for index in range(length):
            element = start + 4 + 4 * index
            yield element + _read(self._buffer, _UOFFSET, element)


class _Shared:
    """What every table of one buffer shares: the bytes left to copy out, and the slots of
    the vtables read, a few small ones (a hostile buffer may give each of thousands of
    tables a vtable of its own, each of 32 767 slots: kept, they took 1.3 MB a table)."""

    __slots__ = ("budget", "slots")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.slots: dict[int, tuple[int, ...]] = {}

    def keep(self, vtable: int, slots: tuple[int, ...]) -> None:
        if len(slots) <= KEPT_VTABLE_SLOTS and len(self.slots) < KEPT_VTABLES:
            self.slots[vtable] = slots


KEPT_VTABLE_SLOTS = 32
"""Slots of a vtable kept for the other tables that use it (a zTOC's tables have 14)."""
KEPT_VTABLES = 256


_STRUCTS: dict[str, struct.Struct] = {}
"""Scalar layouts by their ``struct`` notation, made when first read."""


def _read(buffer: bytes, layout: struct.Struct, position: int) -> int:
    if position < 0:  # unpack_from would count from the end
        _check(buffer, position, layout.size)
    try:
        value: int = layout.unpack_from(buffer, position)[0]
    except struct.error:  # past the end: said as _check says it
        _check(buffer, position, layout.size)
        raise
    return value


def _check(buffer: bytes, position: int, size: int) -> None:
    if position < 0 or position + size > len(buffer):
        raise MalformedContent(
            f"flatbuffer: {size} bytes at {position} lie outside its {len(buffer)} bytes"
        )
