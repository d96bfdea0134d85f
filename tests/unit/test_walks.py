"""When reads of a lazy layer's files make it walked (``regfs/layers/walks.py``)."""

from __future__ import annotations

from regfs.layers.walks import LAYERS_FOLLOWED, Walks


def test_a_layer_is_walked_once_its_files_read_reach_the_threshold_and_said_once() -> None:
    walks = Walks(files=3)
    assert [walks.read("a", start) for start in (0, 10, 0, 10, 20, 30, 40)] == [
        False, False, False, False, True, False, False,
    ]  # fmt: skip


def test_each_layer_counts_its_own_files() -> None:
    walks = Walks(files=2)
    assert not walks.read("a", 0)
    assert not walks.read("b", 5)
    assert walks.read("a", 5)
    assert walks.read("b", 0)


def test_a_layer_forgotten_among_many_starts_again_from_zero() -> None:
    walks = Walks(files=2)
    walks.read("old", 0)
    for layer in range(LAYERS_FOLLOWED):
        walks.read(layer, 0)
    assert not walks.read("old", 1)
    assert walks.read("old", 2)
