"""Whether an eStargz blob's first bytes are files its builder marked to be read first.

Layers layer, pure. An eStargz builder either puts the files a container reads first at
the blob's start and ``.prefetch.landmark`` after them, or, with nothing marked, puts
``.no.prefetch.landmark`` first (stargz-snapshotter's ``estargz`` package: what buildkit,
nerdctl and ``ctr-remote`` write without a record of a start). The first entry's tar
header, in the blob's first gzip member, tells which, long before the TOC at the blob's
end does: a stream of the blob's start (``early_bytes.py``) stops at once when nothing
is marked.
"""

from __future__ import annotations

import zlib

from regfs.layers.formats.toc import PREFETCH_LANDMARK

NO_PREFETCH_LANDMARK = b".no.prefetch.landmark"
TAR_HEADER = 512
LOOKED_AT = 64 << 10
"""Compressed bytes looked through at most for the first header (a gzip member of its own:
a few hundred bytes)."""


def marks_files(head: bytes) -> bool | None:
    """False if the blob starting with ``head`` begins with no marked file (its first entry
    is a landmark, or it is not gzip), True if it begins with another entry; None while
    ``head`` is too short to tell, or its first entry says nothing (a PAX header)."""
    header = b""
    rest = head[:LOOKED_AT]
    while len(header) < TAR_HEADER:  # a header may span gzip members
        inflater = zlib.decompressobj(wbits=31)
        try:
            header += inflater.decompress(rest, TAR_HEADER - len(header))
        except zlib.error:
            return False
        if len(header) == TAR_HEADER:
            break
        if not inflater.eof:  # the input ran out inside a member
            return None if len(head) < LOOKED_AT else False
        rest = inflater.unused_data
        if not rest:
            return None if len(head) < LOOKED_AT else False
    name, kind = header[:100].split(b"\0", 1)[0], header[156:157]
    if kind in (b"x", b"g", b"L"):
        return None  # extended headers first: the name comes after
    return name.removeprefix(b"./") not in (NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK)
