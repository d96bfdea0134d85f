"""A small eStargz writer for unit tests: real layers come from ``ctr-remote`` (see
tests/support/estargz.py); this one makes exact cases (chunk sizes, broken TOCs) cheap."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

TOC_NAME = "stargz.index.json"


def footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer: an empty gzip member whose extra field names the TOC."""
    extra = b"SG" + (22).to_bytes(2, "little") + b"%016xSTARGZ" % toc_offset
    header = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + len(extra).to_bytes(2, "little")
    return header + extra + b"\x01\x00\x00\xff\xff" + bytes(8)


def legacy_footer(toc_offset: int) -> bytes:
    """The 47-byte stargz footer: the same, without the ``SG`` subfield."""
    extra = b"%016xSTARGZ" % toc_offset
    header = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + len(extra).to_bytes(2, "little")
    return header + extra + b"\x01\x00\x00\xff\xff" + bytes(8)


def toc_blob(toc: bytes) -> bytes:
    """The TOC as eStargz stores it: a gzipped tar holding ``stargz.index.json``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(TOC_NAME)
        info.size = len(toc)
        archive.addfile(info, io.BytesIO(toc))
    return gzip.compress(buffer.getvalue())


def estargz(
    files: list[tuple[str, bytes]], chunk_size: int, legacy: bool = False
) -> tuple[bytes, bytes]:
    """A layer of regular files (and ``dir/`` names), each chunk a gzip member of its own;
    returns the blob and its TOC's JSON."""
    blob = io.BytesIO()
    entries: list[dict[str, Any]] = []
    for name, data in files:
        if name.endswith("/"):
            entries.append({"name": name, "type": "dir", "mode": 0o755})
            continue
        for start in range(0, len(data), chunk_size):
            piece = data[start : start + chunk_size]
            entry: dict[str, Any] = {
                "name": name,
                "type": "reg" if start == 0 else "chunk",
                "offset": blob.tell(),
                "chunkDigest": "sha256:" + hashlib.sha256(piece).hexdigest(),
            }
            if start == 0:
                entry |= {"size": len(data), "mode": 0o644, "modtime": "2024-01-02T03:04:05Z"}
            if start:
                entry["chunkOffset"] = start
            if start + chunk_size < len(data):
                entry["chunkSize"] = len(piece)
            entries.append(entry)
            blob.write(gzip.compress(piece + b"\0" * 512))  # then padding and headers
        if not data:
            entries.append({"name": name, "type": "reg", "size": 0, "mode": 0o644})
    toc = json.dumps({"version": 1, "entries": entries}).encode()
    toc_offset = blob.tell()
    blob.write(toc_blob(toc))
    blob.write((legacy_footer if legacy else footer)(toc_offset))
    return blob.getvalue(), toc
