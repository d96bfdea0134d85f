"""What a read asks of the registry: runs of adjacent pieces per Range request, and how far
ahead of a sequential reader to fetch (pure planning, no IO)."""

from __future__ import annotations

import itertools

import pytest

from regfs.layers.coalesce import runs
from regfs.layers.read_ahead import FIRST_WINDOW, LARGEST_WINDOW, ReadAhead

KiB = 1 << 10
MiB = 1 << 20
FAR = 10 + 128 * KiB + 1


def extent(piece: tuple[int, int]) -> tuple[int, int]:
    return piece


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([], []),
        ([(0, 10)], [[(0, 10)]]),
        # adjacent: one request
        ([(0, 10), (10, 20), (20, 30)], [[(0, 10), (10, 20), (20, 30)]]),
        # a small gap (cached pieces, tar headers) is fetched rather than split
        ([(0, 10), (100, 200)], [[(0, 10), (100, 200)]]),
        # a gap wider than a round trip is worth: two requests
        ([(0, 10), (FAR, FAR + 5)], [[(0, 10)], [(FAR, FAR + 5)]]),
        # out of blob order (a TOC need not follow the blob): still one request
        ([(100, 200), (0, 100)], [[(0, 100), (100, 200)]]),
        ([(30, 40), (FAR + 40, FAR + 50), (0, 10)], [[(0, 10), (30, 40)], [(FAR + 40, FAR + 50)]]),
        # overlapping pieces (two names, one member): a request each
        ([(0, 100), (50, 100)], [[(0, 100)], [(50, 100)]]),
    ],
)
def test_runs_join_what_lies_together(
    pieces: list[tuple[int, int]], expected: list[list[tuple[int, int]]]
) -> None:
    assert runs(pieces, extent) == expected


def test_a_run_stays_within_its_largest_size() -> None:
    pieces = [(n * MiB, (n + 1) * MiB) for n in range(10)]
    grouped = runs(pieces, extent, largest=4 * MiB)
    assert [len(run) for run in grouped] == [4, 4, 2]
    big = [(0, 9 * MiB), (9 * MiB, 10 * MiB)]
    assert runs(big, extent, largest=4 * MiB) == [[big[0]], [big[1]]]


def test_sequential_reads_are_read_ahead_with_a_growing_window() -> None:
    ahead = ReadAhead()
    file_end = 64 * MiB
    asked = []
    for start in range(0, 4 * MiB, 128 * KiB):
        asked.append(ahead.after(start, start + 128 * KiB, 0, file_end))
    issued = [window for window in asked if window is not None]
    assert issued[0] == (128 * KiB, 128 * KiB + FIRST_WINDOW)  # from the file's start on
    assert all(a[1] == b[0] for a, b in itertools.pairwise(issued))  # never twice
    sizes = [end - start for start, end in issued]
    assert sizes[-1] > sizes[0] and max(sizes) <= LARGEST_WINDOW
    assert len(issued) < len(asked) / 2  # asked again only when half the window is used


def test_the_window_stops_at_the_largest_and_at_the_file_end() -> None:
    ahead = ReadAhead()
    furthest = 0
    for start in range(0, 200 * MiB, 128 * KiB):
        window = ahead.after(start, start + 128 * KiB, 0, 1 << 40)
        if window is not None:
            assert window[1] - start <= LARGEST_WINDOW + 128 * KiB
            furthest = window[1]
    assert furthest > 200 * MiB
    short = ReadAhead()
    assert short.after(0, 128 * KiB, 0, 300 * KiB) == (128 * KiB, 300 * KiB)
    assert short.after(128 * KiB, 256 * KiB, 0, 300 * KiB) is None  # all asked for already
    assert ReadAhead().after(0, 100, 0, 100) is None  # a whole small file: nothing after it


def test_a_random_read_is_not_read_ahead_until_it_goes_on() -> None:
    ahead = ReadAhead()
    assert ahead.after(5 * MiB, 5 * MiB + 4096, 0, 64 * MiB) is None
    assert ahead.after(9 * MiB, 9 * MiB + 4096, 0, 64 * MiB) is None
    # the next read goes on where the first ended: sequential from now on
    assert ahead.after(5 * MiB + 4096, 5 * MiB + 8192, 0, 64 * MiB) is not None


def test_readers_of_two_files_side_by_side_are_told_apart() -> None:
    ahead = ReadAhead()
    one, two = (0, 64 * MiB), (64 * MiB, 128 * MiB)
    assert ahead.after(0, 128 * KiB, *one) is not None
    assert ahead.after(64 * MiB, 64 * MiB + 128 * KiB, *two) is not None
    assert ahead.after(128 * KiB, 256 * KiB, *one) is not None
    assert ahead.after(64 * MiB + 128 * KiB, 64 * MiB + 256 * KiB, *two) is not None
