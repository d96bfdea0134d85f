"""Which pieces of a layer one Range request fetches together.

Layers layer, pure. Round trips are what a real link costs: a piece (a TOC chunk, a zTOC
span) fetched alone costs one, however small. Pieces wanted at once whose compressed bytes
follow one another in the blob (at most ``MAX_GAP`` apart: the bytes between are cheaper
than another round trip) go in one request, up to ``LARGEST_RUN`` bytes, so that a run
arrives, is decompressed and is checked while the next is on its way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_GAP = 128 << 10
"""Bytes between two pieces that one request still fetches rather than split in two."""
LARGEST_RUN = 4 << 20
"""Bytes one request fetches at most (a piece larger than that is a request of its own)."""
STREAMED_RUN = 256 << 10
"""Bytes of a run taken from a stream already bringing them (``early_bytes.py``): small,
so that each is checked and handed over soon after it came."""


def runs(
    pieces: Sequence[T],
    extent: Callable[[T], tuple[int, int]],
    *,
    largest: int = LARGEST_RUN,
    gap: int = MAX_GAP,
) -> list[list[T]]:
    """``pieces`` cut into runs, each fetched by one request of the bytes from its first
    piece's start to its last piece's end. ``extent(piece)`` is where its compressed bytes
    lie in the blob, ``[start, end)``. Pieces are taken in blob order, whatever their order
    on the stream (a zstd:chunked TOC need not follow its blob: a miss's neighbours on the
    stream may lie before it in the blob). A run goes on while the next piece starts after
    the previous one's end, within ``gap`` bytes of it, and stays within ``largest`` bytes."""
    grouped: list[list[T]] = []
    run_start = previous_end = 0
    for piece in sorted(pieces, key=extent):
        start, end = extent(piece)
        if grouped and previous_end <= start <= previous_end + gap and end - run_start <= largest:
            grouped[-1].append(piece)
        else:
            grouped.append([piece])
            run_start = start
        previous_end = end
    return grouped
