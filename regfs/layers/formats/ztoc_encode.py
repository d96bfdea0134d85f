"""Writing a zTOC: the FlatBuffer ``regfs index push`` uploads (``ztoc.Ztoc`` encoded).

Layers layer, pure. Apart from ``ztoc`` so that a mount, which only reads zTOCs
(``flatbuffer.Table``), never imports the ``flatbuffers`` package (which imports numpy
when it is installed: 50 ms of a mount's first request).
"""

from __future__ import annotations

from typing import Any

import flatbuffers

from regfs.layers.formats.ztoc import GZIP, Ztoc, ZtocFile


def encode_ztoc(ztoc: Ztoc) -> bytes:
    """``ztoc`` as the FlatBuffer soci-snapshotter reads (fields in schema order)."""
    builder = flatbuffers.Builder(1 << 16)
    version = builder.CreateString(ztoc.version)
    build_tool = builder.CreateString(ztoc.build_tool)
    files = _vector(builder, [_encode_file(builder, file) for file in ztoc.files])
    toc = _table(builder, [(_OFFSET, files)])
    checkpoints = builder.CreateByteVector(ztoc.checkpoints)
    digests = _vector(builder, [builder.CreateString(d) for d in ztoc.span_digests])
    info = _table(builder, [
        (_INT8, ztoc.algorithm, GZIP), (_INT32, len(ztoc.span_digests) - 1),
        (_OFFSET, digests), (_OFFSET, checkpoints),
    ])  # fmt: skip
    root = _table(builder, [
        (_OFFSET, version), (_OFFSET, build_tool), (_INT64, ztoc.compressed_size),
        (_INT64, ztoc.uncompressed_size), (_OFFSET, toc), (_OFFSET, info),
    ])  # fmt: skip
    builder.Finish(root)
    return bytes(builder.Output())


def _encode_file(builder: flatbuffers.Builder, file: ZtocFile) -> int:
    name, kind, linkname, uname, gname, mod_time = (
        builder.CreateString(s)
        for s in (file.name, file.type.encode(), file.linkname, file.uname, file.gname,
                  file.mod_time.encode())
    )  # fmt: skip
    pairs = []
    for key, value in file.pax:
        key_offset, value_offset = builder.CreateString(key), builder.CreateString(value)
        pairs.append(_table(builder, [(_OFFSET, key_offset), (_OFFSET, value_offset)]))
    pax = _vector(builder, pairs)
    return _table(builder, [
        (_OFFSET, name), (_OFFSET, kind), (_INT64, file.offset), (_INT64, file.size),
        (_OFFSET, linkname), (_INT64, file.mode), (_UINT32, file.uid), (_UINT32, file.gid),
        (_OFFSET, uname), (_OFFSET, gname), (_OFFSET, mod_time), (_INT64, file.devmajor),
        (_INT64, file.devminor), (_OFFSET, pax),
    ])  # fmt: skip


_OFFSET = flatbuffers.Builder.PrependUOffsetTRelativeSlot
_INT64 = flatbuffers.Builder.PrependInt64Slot
_INT32 = flatbuffers.Builder.PrependInt32Slot
_UINT32 = flatbuffers.Builder.PrependUint32Slot
_INT8 = flatbuffers.Builder.PrependInt8Slot


def _table(builder: flatbuffers.Builder, fields: list[tuple[Any, ...]]) -> int:
    """A table of ``(prepend, value[, default])`` fields, given in id order; a scalar
    equal to its default (0 unless given) is left out, as the schema's readers expect."""
    builder.StartObject(len(fields))
    for field_id, (prepend, value, *default) in enumerate(fields):
        prepend(builder, field_id, value, default[0] if default else 0)
    offset: int = builder.EndObject()
    return offset


def _vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    vector: int = builder.EndVector()
    return vector
